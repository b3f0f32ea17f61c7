"""Process checks shared by the tests."""


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
