"""Ending ``model.generate`` at a stop string, cheaply.

Why not transformers' own ``stop_strings=``: its ``StopStringCriteria`` builds a table over the
whole vocabulary for every ``generate`` call; with Gemma 3's 262144 tokens that cost about 5 s per
request on 2 cores (measured: 64 greedy tokens at 4.4 tok/s with it, 6.7 tok/s without). Here each
step decodes only the last few generated tokens and looks for a stop string in them. The scheduler
still cuts the text exactly at the stop string; this only ends the generation early.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["TextStopCriteria"]

#: Decoded tokens looked at per step beyond the longest stop string's length in characters (a
#: token is at least one character; a few more cover tokens that decode to nothing alone).
_SLACK_TOKENS = 8


class TextStopCriteria:
    """A transformers stopping criterion: true once the generated text holds a stop string."""

    def __init__(
        self, decode: Callable[[list[int]], str], prompt_len: int, stops: Sequence[str]
    ) -> None:
        self.decode, self.prompt_len = decode, prompt_len
        self.stops = tuple(s for s in stops if s)
        self.window = max((len(s) for s in self.stops), default=0) + _SLACK_TOKENS

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object
    ) -> torch.Tensor:
        done = []
        for row in input_ids:
            generated = row[self.prompt_len:]
            tail = self.decode([int(t) for t in generated[-self.window:].tolist()])
            done.append(any(stop in tail for stop in self.stops))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
