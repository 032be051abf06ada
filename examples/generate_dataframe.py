"""batchgen from Python: typed answers for a DataFrame, offline against the built-in emulator.

    python examples/generate_dataframe.py

Against the real API, drop the emulator and pass ``api_key=`` (or set $GEMINI_API_KEY).
The same call works inside a notebook or an async service; there, ``await
batchgen.agenerate(...)`` is the non-blocking form.
"""

from __future__ import annotations

import pandas as pd

import batchgen
from batchgen.emulator import EmulatorThread

reviews = pd.DataFrame(
    {
        "product": ["kettle", "headphones", "desk lamp", "backpack"],
        "review": [
            "Boils fast, but the lid sticks after a month.",
            "Great sound; the ear cushions wore out quickly.",
            "Bright, sturdy, and the switch is easy to reach.",
            "Zips broke on day two. Returned it.",
        ],
    }
)

schema = {
    "type": "OBJECT",
    "required": ["sentiment", "score", "issues"],
    "properties": {
        "sentiment": {"type": "STRING", "enum": ["positive", "mixed", "negative"]},
        "score": {"type": "INTEGER", "minimum": 1, "maximum": 5},
        "issues": {"type": "ARRAY", "items": {"type": "STRING"}},
    },
}

with EmulatorThread() as emulator:  # an offline stand-in for the Gemini API on 127.0.0.1
    answers = batchgen.generate(
        reviews,
        prompt="Rate this review of a {{ product }}: {{ review }}",
        schema=schema,
        model="gemini-3.8-flash",
        base_url=emulator.base_url,
        api_key="emulator-key",
        carry=["product"],
    )

print(answers[["row_id", "product", "sentiment", "score", "issues", "status"]].to_string())
print(answers.dtypes[["sentiment", "score", "issues", "total_tokens"]].to_string())
print(f"{len(answers)} rows, {int((answers['status'] == 'ok').sum())} ok, "
      f"{int(answers['total_tokens'].sum())} tokens")  # fmt: skip
