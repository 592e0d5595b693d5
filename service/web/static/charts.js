// Curves of a job drawn with uPlot (vendored, see vendor/README.md): one point per step, kept by step
// so that steps trained again after a resume replace the ones an interrupted attempt reported.
// The container's data-points attribute says how many steps are drawn (the browser test reads it).

/* global uPlot */

const COLOURS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2"];
const HEIGHT = 240;
// Steps are whole numbers: the x axis ticks at 1, 2, 5, 10, 20, 50, ... steps apart, never 2.5.
const STEP_INCREMENTS = [1, 2, 5].flatMap((base) => [1, 10, 100, 1000, 10000, 100000].map((scale) => base * scale)).sort((a, b) => a - b);

// Tick labels with as many decimals as the spacing between ticks needs: a loss that moves in its
// fourth decimal gets four, not three equal labels.
function ticks(plot, splits, axisIndex, space, increment) {
  const decimals = Math.min(Math.max(0, -Math.floor(Math.log10(increment))), 8);
  return splits.map((value) => value.toFixed(decimals));
}

export class StepChart {
  // `scaleOf(name)` puts a series on the "loss" scale (left axis) or the "score" scale (right axis).
  constructor(container, { scaleOf = () => "loss" } = {}) {
    this.container = container;
    this.scaleOf = scaleOf;
    this.values = new Map(); // series name -> Map(step -> value)
    this.plot = null;
    this.names = [];
    this.frame = null;
    new ResizeObserver(() => this.plot && this.plot.setSize(this.size())).observe(container);
  }

  add(step, name, value) {
    if (typeof step !== "number" || (typeof value !== "number" && value !== null)) {
      return;
    }
    if (!this.values.has(name)) {
      this.values.set(name, new Map());
    }
    this.values.get(name).set(step, value);
    this.redrawSoon();
  }

  clear() {
    this.values.clear();
    this.redrawSoon();
  }

  // Many events arrive together (a page of history): draw once per animation frame, not per event.
  redrawSoon() {
    if (this.frame === null) {
      this.frame = requestAnimationFrame(() => { this.frame = null; this.redraw(); });
    }
  }

  redraw() {
    const names = [...this.values.keys()];
    const steps = [...new Set(names.flatMap((name) => [...this.values.get(name).keys()]))].sort((a, b) => a - b);
    const data = [steps, ...names.map((name) => steps.map((step) => this.values.get(name).get(step) ?? null))];
    this.container.dataset.points = String(steps.length);
    this.container.dataset.series = names.join(",");
    if (names.length === 0) {
      this.plot?.destroy();
      this.plot = null;
      this.names = [];
      this.container.textContent = "No points yet.";
      return;
    }
    if (this.plot === null || names.join() !== this.names.join()) {
      this.build(names, data);
    } else {
      this.plot.setData(data);
    }
  }

  build(names, data) {
    this.plot?.destroy();
    this.container.textContent = "";
    this.names = names;
    const scales = new Set(names.map((name) => this.scaleOf(name)));
    const axes = [{ label: "step", incrs: STEP_INCREMENTS }];
    if (scales.has("loss")) {
      axes.push({ scale: "loss", label: "loss", values: ticks });
    }
    if (scales.has("score")) {
      axes.push({ scale: "score", label: "score", side: 1, values: ticks, grid: { show: !scales.has("loss") } });
    }
    const series = [
      { label: "step" },
      ...names.map((name, index) => ({
        label: name,
        scale: this.scaleOf(name),
        stroke: COLOURS[index % COLOURS.length],
        width: 2,
        points: { show: true, size: 5 },
        spanGaps: true,
      })),
    ];
    this.plot = new uPlot(
      { ...this.size(), scales: { x: { time: false } }, axes, series, legend: { live: true } },
      data,
      this.container,
    );
  }

  size() {
    return { width: Math.max(this.container.clientWidth, 240), height: HEIGHT };
  }
}
