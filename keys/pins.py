"""Identity pins that survive a restart: origin -> (name, base URL), kept as JSON.

The resolver refuses an instance whose identity changed since it was first seen; kept
only in memory, a restart would forget every pin and accept the change silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, MutableMapping
from pathlib import Path


class PinFile(MutableMapping[str, tuple[str, str]]):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._pins: dict[str, tuple[str, str]] = {}
        if self.path.is_file():
            data = json.loads(self.path.read_text())
            self._pins = {k: (v[0], v[1]) for k, v in data.items()}

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({k: list(v) for k, v in self._pins.items()}, fh, indent=2)
        os.replace(tmp, self.path)  # atomic: a crash leaves the old file or the new one

    def __getitem__(self, key: str) -> tuple[str, str]:
        return self._pins[key]

    def __setitem__(self, key: str, value: tuple[str, str]) -> None:
        self._pins[key] = (value[0], value[1])
        self._save()

    def __delitem__(self, key: str) -> None:
        del self._pins[key]
        self._save()

    def __iter__(self) -> Iterator[str]:
        return iter(self._pins)

    def __len__(self) -> int:
        return len(self._pins)
