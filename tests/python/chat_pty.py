"""Drive `kiln chat` through a pseudo-terminal as a person would: a question, Ctrl-C while
the reply streams (it must stop the reply and return to the prompt, not leave), another
question answered in full, then /exit. Prints what it saw; exits non-zero on a failure.

usage: python3 chat_pty.py KILN MODEL
"""

import os
import pty
import select
import sys
import time

kiln, model = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.execv(kiln, [kiln, "chat", "-m", model, "--temp", "0", "-n", "300"])

seen = b""


def read_until(needle: bytes, timeout: float) -> bytes:
    """Read from the terminal until `needle` appears after what was read so far."""
    global seen
    start = len(seen)
    deadline = time.time() + timeout
    while needle not in seen[start:]:
        left = deadline - time.time()
        if left <= 0:
            sys.exit(f"timed out waiting for {needle!r}; the terminal showed:\n{seen.decode(errors='replace')}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                sys.exit(f"kiln chat ended early; the terminal showed:\n{seen.decode(errors='replace')}")
            seen += chunk
    return seen[start:]


read_until(b"> ", 120)
os.write(fd, b"Tell me a long story about a dragon who learns to paint.\r")
# Let the reply stream a little, then press Ctrl-C.
read_until(b"dragon", 120)
reply = read_until(b" ", 60)
os.write(fd, b"\x03")
after = read_until(b"> ", 60)
if b"stopped" not in after:
    sys.exit(f"Ctrl-C did not stop the reply:\n{seen.decode(errors='replace')}")
os.write(fd, b"What is 2+2?\r")
answer = read_until(b"> ", 120)
if b"reused from the cache" not in answer:
    sys.exit(f"no timings after the second reply:\n{seen.decode(errors='replace')}")
os.write(fd, b"/exit\r")
_, status = os.waitpid(pid, 0)
if os.waitstatus_to_exitcode(status) != 0:
    sys.exit(f"kiln chat exited with {status}:\n{seen.decode(errors='replace')}")
print(seen.decode(errors="replace"))
