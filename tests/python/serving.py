"""What the Python checks share: start a `reid` process and wait for the line of its log that
says where it serves."""
import re
import subprocess
import sys
import threading


def start(args: list[str], pattern: str, env: dict[str, str], timeout: float = 60) -> tuple[subprocess.Popen, str, list[str]]:
    """Runs `args` with `env`, reading its stderr to the end (so the pipe never fills) into the
    returned log; returns once a line matches `pattern`, with the pattern's first group."""
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
    found, value, log = threading.Event(), [], []

    def read() -> None:
        for line in proc.stderr:
            log.append(line)
            m = re.search(pattern, line)
            if m and not found.is_set():
                value.append(m.group(1))
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout):
        proc.kill()
        sys.exit(f"{args[1:3]} did not start:\n" + "".join(log[-30:]))
    return proc, value[0], log
