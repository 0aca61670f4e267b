"""The embedded broker: kombu's filesystem transport, made safe for several processes.

kombu's filesystem transport creates a message file and then writes it, and a
consumer takes a message by moving it into a processed folder (``/tmp`` when
none is kept, so across disks: a copy, then a delete). A consumer can therefore
read a message that is still empty (``JSONDecodeError``), and two workers can
both take one message or lose it between them. Here a message is written under
a hidden temporary name and renamed into the queue folder when complete, and a
consumer claims it by renaming it into a folder beside the queue (same disk):
a rename succeeds for exactly one process, so every message is read whole,
once. That lets a site run ``telerad up`` and more ``telerad worker``
processes on one machine with no Redis.

What it still cannot do (Redis can): priorities, and giving back a message whose
worker died after taking it; docs/architecture.md says when to move to Redis.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.transport import filesystem
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads


class Channel(filesystem.Channel):
    """Atomic put (write, then rename in) and claim (rename out, then read)."""

    @property
    def claimed_folder(self) -> str:
        folder = self.transport_options.get("claimed_folder") or os.path.join(self.data_folder_in, ".claimed")
        os.makedirs(folder, exist_ok=True)
        return folder

    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        tmp = os.path.join(self.data_folder_out, f".{name}.tmp")  # not a message name: never read half-written
        try:
            with open(tmp, "wb") as fh:
                fh.write(str_to_bytes(dumps(payload)))
            os.rename(tmp, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"cannot add a message to {self.data_folder_out}") from exc

    def _get(self, queue):
        wanted = f"{queue}.msg"
        claimed_folder = self.claimed_folder
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            claimed = os.path.join(claimed_folder, f"{os.getpid()}-{name}")
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except FileNotFoundError:
                continue  # another worker took it first
            try:
                with open(claimed, "rb") as fh:
                    payload = fh.read()
            finally:
                os.remove(claimed)
            return loads(bytes_to_str(payload))
        raise Empty()


class Transport(filesystem.Transport):
    """kombu's filesystem transport with the channel above."""

    Channel = Channel
