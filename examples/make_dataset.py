"""Write the example data set: customer-support messages labelled with one of four intents.

The classes are `billing`, `shipping`, `technical` and `account`. Every message is built from an
intent (what the customer actually needs), one of its paraphrases, slot values (products, amounts,
devices, error messages...), an optional opener and closer, and a casual or formal style. About a
third of the intents deliberately mention another class's vocabulary ("I paid for express shipping
but the parcel is late" is `shipping`; "the checkout page freezes" is `technical`), so counting
keywords is not enough: a model has to read what is being asked.

Each intent keeps one of its paraphrases for validation only, so validation messages are worded
in ways the training set never shows: the validation score measures understanding of the
request, not recall of a template.

Written for this project; no external data. Deterministic: the same seed writes the same files.

    python examples/make_dataset.py            # writes train.jsonl and validation.jsonl beside it
    python examples/make_dataset.py --check    # exits 1 if the checked-in files are out of date
"""

import argparse
import json
import logging
import random
import string
import sys
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("make_dataset")

SEED = 20240611
TRAIN_PER_CLASS = 120
VALIDATION_PER_CLASS = 40
HERE = Path(__file__).resolve().parent

SLOTS: dict[str, tuple[str, ...]] = {
    "product": (
        "wireless headset",
        "standing desk",
        "coffee grinder",
        "phone case",
        "wifi router",
        "smartwatch",
        "hiking backpack",
        "air purifier",
        "mechanical keyboard",
        "27-inch monitor",
        "blender",
        "desk lamp",
        "e-reader",
        "robot vacuum",
        "webcam",
        "electric kettle",
    ),
    # Things with electronics, for the technical intents ("my smartwatch won't pair").
    "gadget": (
        "wireless headset",
        "smartwatch",
        "wifi router",
        "robot vacuum",
        "webcam",
        "e-reader",
        "air purifier",
        "mechanical keyboard",
        "fitness tracker",
        "smart speaker",
    ),
    "amount": ("$12.99", "$49", "$120", "$7.50", "$89.99", "$230", "29 euros", "£18.50", "$64"),
    "days": ("three days", "a week", "two weeks", "ten days", "five days", "over a month"),
    "order": ("#48213", "#10937", "#77502", "#35118", "#90264", "#61840", "DT-5521", "DT-8830"),
    "place": ("Canada", "Norway", "Australia", "Mexico", "Japan", "Ireland", "South Africa", "Chile"),
    "device": (
        "my iPhone",
        "my Android phone",
        "the Windows app",
        "my MacBook",
        "my iPad",
        "Chrome",
        "Firefox",
        "my Samsung tablet",
        "the Linux desktop app",
        "Safari",
    ),
    "error": (
        "error 502",
        "a blank white screen",
        "'connection timed out'",
        "an endless spinner",
        "error code E-41",
        "'something went wrong'",
        "error 500",
        "'session invalid'",
    ),
    "feature": (
        "CSV export",
        "dark mode",
        "the search bar",
        "push notifications",
        "the photo upload",
        "the sync feature",
        "the calendar view",
        "voice control",
    ),
    "month": ("January", "March", "April", "June", "August", "October", "November", "December"),
}

# One tuple per intent; each string is a paraphrase of the same request. Intents marked
# "misleading" use words that belong to another class on purpose.
INTENTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "billing": (
        (
            "I was charged twice for my {product}.",
            "there are two identical charges for the {product} on my card",
            "your system billed me two times for one {product}",
        ),
        (
            "What is this {amount} charge on my card?",
            "I don't recognise a {amount} payment you took in {month}",
            "there's a {amount} transaction from you that I never authorised",
        ),
        (
            "I'd like a refund for the {product}, please.",
            "can I get my money back for the {product}",
            "please refund the {amount} I paid for the {product}",
        ),
        (
            "Can you send me an invoice for my {month} subscription?",
            "I need a VAT receipt for order {order}",
            "where can I download the invoice for the {amount} I paid in {month}",
        ),
        (
            "How do I switch from monthly to yearly billing?",
            "is there a discount if I pay for the whole year up front",
            "I want to move my plan to annual payments",
        ),
        (
            "The discount code didn't apply and I paid full price.",
            "my coupon was accepted but I was still charged {amount}",
            "the promo price was not applied to order {order}",
        ),
        (
            "My card expired, how do I update my payment details?",
            "I need to change the credit card you charge each month",
            "please take future payments from my new debit card",
        ),
        # misleading: account words, billing need
        (
            "I deleted my account in {month} but you still charge me {amount} a month.",
            "my profile is closed yet the subscription keeps billing me",
            "you removed my account but the monthly fee still comes off my card",
        ),
        # misleading: shipping words, billing need
        (
            "I was charged a delivery fee although my order qualified for free shipping.",
            "order {order} was over the free-shipping threshold but you added {amount} for postage",
            "why did I pay for express delivery when standard was supposed to be free",
        ),
        # misleading: shipping words, billing need
        (
            "I returned the {product} {days} ago and the refund still hasn't reached my card.",
            "the courier collected the return but I haven't seen my {amount} back",
            "you received my returned {product} but never refunded me",
        ),
        # misleading: technical words, billing need
        (
            "The app crashed while I was paying and now I see two pending charges of {amount}.",
            "the payment page froze, I retried, and my bank shows the {amount} twice",
            "after the error at checkout I got billed for the {product} two times",
        ),
        (
            "Your price went up from {amount} without any notice.",
            "why is my renewal more expensive than last year",
            "I was quoted a lower price than what you actually charged me",
        ),
    ),
    "shipping": (
        (
            "Where is my {product}? The tracking hasn't moved in {days}.",
            "order {order} has been stuck in transit for {days}",
            "the tracking page has said 'in transit' for {days} now",
        ),
        (
            "The parcel shows as delivered but I never got it.",
            "tracking for order {order} says delivered, there is nothing at my door",
            "my {product} was marked as delivered but it is not here",
        ),
        (
            "Can I change the delivery address for order {order}?",
            "I moved last week, can you redirect my {product} to my new address",
            "please send order {order} to my office instead of my home",
        ),
        (
            "The {product} arrived damaged, the box was crushed.",
            "my {product} came broken in a soaked box",
            "the courier dropped the parcel and the {product} is cracked",
        ),
        (
            "I received the wrong item: I ordered a {product} and got something else.",
            "the box for order {order} had someone else's {product} in it",
            "you sent me a {product} in the wrong colour and size",
        ),
        (
            "Do you deliver to {place}?",
            "how long does express delivery to {place} take",
            "what are the postage options for an order to {place}",
        ),
        (
            "The courier left my parcel with a neighbour I don't know.",
            "the driver dumped my {product} by the bins outside",
            "my package was handed to the wrong flat",
        ),
        (
            "Half of my order is missing from the box.",
            "order {order} arrived without the {product}",
            "only one of the two parcels for order {order} came",
        ),
        (
            "How do I get a return label for the {product}?",
            "I want to send the {product} back, where do I drop it off",
            "can you arrange a pickup to return order {order}",
        ),
        # misleading: billing words, shipping need
        (
            "I paid {amount} for next-day delivery and the {product} is still not here after {days}.",
            "I paid for express postage, it has now been {days} and no parcel",
            "I was charged {amount} for priority shipping but order {order} is late",
        ),
        # misleading: account words, shipping need
        (
            "My account page says order {order} shipped but it hasn't moved in {days}.",
            "when I log in it shows the {product} dispatched, but the courier has no record of it",
            "my profile lists the parcel as sent {days} ago and nothing has arrived",
        ),
        # misleading: technical words, shipping need
        (
            "The {product} I ordered never left your warehouse, it was supposed to arrive {days} ago.",
            "the {product} is still waiting for a courier pickup after {days}",
            "your warehouse hasn't dispatched my {product} yet",
        ),
    ),
    "technical": (
        (
            "The app crashes every time I open it on {device}.",
            "the app closes itself right after launch on {device}",
            "since yesterday the app won't start on {device} at all",
        ),
        (
            "I keep getting {error} when I use {feature}.",
            "{feature} fails with {error}",
            "every time I try {feature} I see {error}",
        ),
        (
            "The website won't load, I just see {error}.",
            "your dashboard shows {error} on {device}",
            "pages time out and end with {error}",
        ),
        (
            "{feature} stopped working after the latest update.",
            "the last update broke {feature} on {device}",
            "after the latest update on {device}, {feature} does nothing",
        ),
        (
            "The app is extremely slow and drains my battery on {device}.",
            "the app uses all my memory and {device} overheats",
            "scrolling is laggy and the app freezes on {device}",
        ),
        (
            "My {gadget} won't pair over Bluetooth.",
            "the {gadget} keeps disconnecting from {device}",
            "{device} can't find the {gadget} when I try to connect it",
        ),
        (
            "The {gadget} won't turn on even after charging overnight.",
            "my {gadget} restarts by itself every few minutes",
            "the firmware update for my {gadget} is stuck at 60 percent",
        ),
        (
            "Data doesn't sync between {device} and the website.",
            "changes I make on {device} never show up on my laptop",
            "the sync feature duplicates everything I add on {device}",
        ),
        # misleading: billing words, technical need
        (
            "The checkout page freezes when I press the pay button on {device}.",
            "the payment form shows {error} so I can't finish paying",
            "the invoice PDF download gives {error}",
        ),
        # misleading: shipping words, technical need
        (
            "The order tracking page shows {error} on {device}.",
            "the delivery map in the app is blank on {device}",
            "the shipping calculator on your site throws {error}",
        ),
        # misleading: account words, technical need
        (
            "The settings page shows {error} whenever I open my profile.",
            "uploading a profile picture fails with {error}",
            "the account dashboard is a blank screen on {device}",
        ),
        (
            "The {gadget} setup wizard crashes halfway through.",
            "the companion app can't detect the {gadget} on {device}",
            "the {gadget} shows a red blinking light and stops responding",
        ),
    ),
    "account": (
        (
            "I forgot my password and the reset email never arrives.",
            "the password reset link you send me has already expired",
            "I can't reset my password, no email comes through",
        ),
        (
            "How do I change the email address on my account?",
            "I need to update the email I sign in with",
            "please move my login to a new email address",
        ),
        (
            "Please delete my account and all my data.",
            "I want my profile and personal information erased",
            "how do I permanently close my account",
        ),
        (
            "My account got locked after too many login attempts.",
            "I'm locked out after typing the wrong password a few times",
            "it says my account is suspended and I can't sign in",
        ),
        (
            "How do I turn on two-factor authentication?",
            "I want to add a security code when I log in",
            "can I use an authenticator app for my login",
        ),
        (
            "Someone logged into my account from {place}.",
            "I got an alert about a sign-in from {place} that wasn't me",
            "I think my account was hacked, the password was changed without me",
        ),
        (
            "Can I merge my two accounts into one?",
            "I accidentally created a second profile with another email",
            "please combine my old and new accounts",
        ),
        (
            "How do I change my username?",
            "I'd like to update the display name on my profile",
            "can I rename my account",
        ),
        (
            "I want to stop receiving your marketing emails.",
            "please unsubscribe me from the newsletter",
            "where do I change my notification preferences",
        ),
        # misleading: billing words, account need
        (
            "How do I add my partner as a second user on our family plan?",
            "can I invite another person to share my membership login",
            "I want to remove my ex from the household plan's members",
        ),
        # misleading: shipping words, account need
        (
            "Please update the default address saved in my profile.",
            "I want to change the home address stored on my account",
            "how do I edit the saved addresses in my account settings",
        ),
        # misleading: technical words, account need
        (
            "I can't sign in on {device}, it says my password is wrong though I just reset it.",
            "{device} keeps logging me out of my account every few minutes",
            "the login code for my account never reaches {device}",
        ),
    ),
}

# Context a customer gives before the request. A message only ever gets context from another
# class, so the topic mentioned first is often not the one being asked about.
BACKSTORIES: dict[str, tuple[str, ...]] = {
    "billing": (
        "My payment went through fine.",
        "I already paid the invoice for {month}.",
        "I was refunded for my last order without any problem.",
        "I'm on the yearly plan.",
        "The {amount} charge for order {order} is correct.",
        "I updated my card details last week.",
    ),
    "shipping": (
        "My {product} arrived on time.",
        "The courier delivered order {order} yesterday.",
        "I ordered a {product} in {month}.",
        "The parcel came well packed.",
        "I live in {place} and usually get deliveries quickly.",
        "I got the tracking email for order {order}.",
    ),
    "technical": (
        "I'm on the latest version of the app.",
        "I already restarted {device}.",
        "I use the app on {device}.",
        "The app itself runs fine on {device}.",
        "I cleared my cache and cookies.",
        "My {gadget} works normally otherwise.",
    ),
    "account": (
        "I'm logged in right now.",
        "I changed my password recently.",
        "I've had an account with you since {month}.",
        "My profile details are all up to date.",
        "I signed up with my work email.",
        "I have two-factor authentication turned on.",
    ),
}
BACKSTORY_RATE = 0.6
LINKS: tuple[str, ...] = ("But ", "However, ", "Now ", "The problem is ", "Still, ", "")

OPENERS: tuple[str, ...] = (
    "",
    "",
    "",
    "Hi,",
    "Hello,",
    "Hi there,",
    "Good morning,",
    "Hey,",
    "Quick question:",
    "Hello support team,",
    "Sorry to bother you,",
    "Dear customer service,",
)
CLOSERS: tuple[str, ...] = (
    "",
    "",
    "",
    "Thanks.",
    "Thank you!",
    "Please help.",
    "Can you sort this out?",
    "This is urgent.",
    "Any idea what to do?",
    "Thanks in advance.",
    "I'd appreciate a quick reply.",
    "Cheers.",
)


@dataclass(frozen=True)
class Example:
    text: str
    label: str


def fill(template: str, rng: random.Random) -> str:
    """Fill each {slot} of `template` with a value drawn from SLOTS."""
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    return template.format(**{name: rng.choice(SLOTS[name]) for name in names})


# Slot values that start a sentence and keep their capital after an opener.
PROPER_NOUNS = frozenset({"Chrome", "Firefox", "Safari"})
QUESTION_WORDS = frozenset({"how", "can", "where", "what", "why", "is", "do", "does"})


def as_sentence(core: str) -> str:
    """Capitalise a paraphrase and end it with '?' if it asks something, '.' otherwise."""
    core = core[0].upper() + core[1:]
    if core[-1] in ".?!":
        return core
    return core + ("?" if core.split()[0].lower() in QUESTION_WORDS else ".")


def style(text: str, rng: random.Random) -> str:
    """About one message in five is typed casually: lower case, no final punctuation."""
    if rng.random() < 0.2:
        return text.lower().rstrip(".!?")
    return text


def after_opener(core: str) -> str:
    """Lower-case the first letter after "Hi," or "But " unless it starts "I", a name or an acronym."""
    first_word = core.split()[0]
    keeps_case = (
        first_word == "I"
        or first_word.startswith("I'")
        or any(letter.isupper() for letter in first_word[1:])
        or first_word in PROPER_NOUNS
    )
    return core if keeps_case else core[0].lower() + core[1:]


def make_example(label: str, intents: list[tuple[str, ...]], rng: random.Random) -> Example:
    core = as_sentence(fill(rng.choice(rng.choice(intents)), rng))
    if rng.random() < BACKSTORY_RATE:
        other = rng.choice([name for name in BACKSTORIES if name != label])
        story = fill(rng.choice(BACKSTORIES[other]), rng)
        link = rng.choice(LINKS)
        core = f"{story} {link}{after_opener(core) if link else core}"
    opener = rng.choice(OPENERS)
    parts = (opener, after_opener(core) if opener else core, rng.choice(CLOSERS))
    text = " ".join(part for part in parts if part)
    return Example(text=style(text, rng), label=label)


def hold_out_paraphrases(rng: random.Random) -> dict[str, dict[str, list[tuple[str, ...]]]]:
    """For every intent, keep one paraphrase for validation only; training gets the others."""
    phrasebook: dict[str, dict[str, list[tuple[str, ...]]]] = {"train": {}, "validation": {}}
    for label, intents in INTENTS.items():
        phrasebook["train"][label] = []
        phrasebook["validation"][label] = []
        for paraphrases in intents:
            held = rng.randrange(len(paraphrases))
            phrasebook["validation"][label].append((paraphrases[held],))
            phrasebook["train"][label].append(paraphrases[:held] + paraphrases[held + 1 :])
    return phrasebook


def build(seed: int = SEED) -> dict[str, list[Example]]:
    """Draw unique, class-balanced messages for each split from that split's paraphrases."""
    rng = random.Random(seed)
    phrasebook = hold_out_paraphrases(rng)
    wanted = {"train": TRAIN_PER_CLASS, "validation": VALIDATION_PER_CLASS}
    seen_texts: set[str] = set()
    splits: dict[str, list[Example]] = {"train": [], "validation": []}
    for split, per_class in wanted.items():
        for label in INTENTS:
            taken = 0
            while taken < per_class:
                example = make_example(label, phrasebook[split][label], rng)
                if example.text.lower() not in seen_texts:
                    seen_texts.add(example.text.lower())
                    splits[split].append(example)
                    taken += 1
        rng.shuffle(splits[split])
    return splits


def to_jsonl(examples: list[Example]) -> str:
    lines = (json.dumps({"text": e.text, "label": e.label}, ensure_ascii=False) for e in examples)
    return "".join(line + "\n" for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--check", action="store_true", help="Fail if the files on disk differ.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    splits = build(args.seed)
    outputs = {f"{split}.jsonl": to_jsonl(examples) for split, examples in splits.items()}
    for name, content in outputs.items():
        path = args.out_dir / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != content:
                logger.error("%s is out of date: run python examples/make_dataset.py", path)
                return 1
            continue
        path.write_text(content, encoding="utf-8")
        logger.info("wrote %s (%d lines)", path, content.count("\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
