"""User-facing errors and the bad-row log shared by every reader.

`InputError` carries one sentence meant for a person; command-line entry points print it
and exit with code 2 instead of showing a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXIT_BAD_INPUT = 2  # the exit code of every command line (scripts, the app, the deploy) for input a person can fix


class InputError(ValueError):
    """Bad input that a user can fix: the message is one plain sentence."""

    exit_code = EXIT_BAD_INPUT


class RunFailed(InputError):
    """A run that trained but produced nothing usable (weights or loss not finite): said in one sentence like bad
    input, with exit code 1, and nothing is published."""

    exit_code = 1


@dataclass
class BadRows:
    """Rows skipped while reading a file: a count and the first few `file:line` reasons."""

    keep: int = 5
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, reason: str) -> None:
        self.count += 1
        if len(self.examples) < self.keep:
            self.examples.append(f"{where}: {reason}")

    def extend(self, other: "BadRows") -> None:
        self.count += other.count
        room = self.keep - len(self.examples)
        self.examples.extend(other.examples[: max(room, 0)])

    def summary(self, what: str = "rows") -> str | None:
        """One line (plus indented examples) for the terminal, or None when nothing was skipped."""
        if not self.count:
            return None
        lines = [f"skipped {self.count} bad {what}:"] + [f"  {e}" for e in self.examples]
        if self.count > len(self.examples):
            lines.append(f"  ... and {self.count - len(self.examples)} more")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"count": self.count, "examples": list(self.examples)}
