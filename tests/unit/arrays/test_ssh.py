"""SharedCommandRunner without SSH (local commands): answers shared within share_for, one pool per event loop."""
from __future__ import annotations

import asyncio


def test_identical_asks_share_one_command_and_the_last_user_closes(tmp_path):
    from sciops.arrays import ssh as runners

    count = tmp_path / "count"
    argv = ["sh", "-c", f"echo x >> {count}; sleep 0.2; echo listing"]

    async def go():
        users = [runners.SharedCommandRunner(None) for _ in range(5)]
        first = await asyncio.gather(*(u.run(argv, share_for=10) for u in users))   # one in flight, shared
        again = await users[0].run(argv, share_for=10)                              # fresh enough: shared
        unshared = await users[1].run(argv)                                         # not asked to share
        stats = users[0].stats
        for u in users:
            await u.close()
        return first, again, unshared, stats

    first, again, unshared, stats = asyncio.run(go())
    assert [r.stdout.strip() for r in first] == ["listing"] * 5 and again.stdout.strip() == "listing"
    assert count.read_text().count("x") == 2          # one shared command + the unshared one
    assert stats == {"users": 5, "commands": 2, "shared": 5}
    assert not any(runners._SHARED.values())          # the last user's close emptied the pool


def test_an_answer_older_than_share_for_is_asked_again(tmp_path):
    from sciops.arrays import ssh as runners

    count = tmp_path / "count"
    argv = ["sh", "-c", f"echo x >> {count}"]

    async def go():
        u = runners.SharedCommandRunner(None)
        await u.run(argv, share_for=0.1)
        await asyncio.sleep(0.2)
        await u.run(argv, share_for=0.1)
        await u.close()

    asyncio.run(go())
    assert count.read_text().count("x") == 2


def test_a_watcher_cancelled_mid_command_does_not_take_the_answer_from_the_others(tmp_path):
    """The trigger that sent the shared command is cancelled (its task killed): the others still get the answer."""
    from sciops.arrays import ssh as runners

    argv = ["sh", "-c", "sleep 0.3; echo listing"]

    async def go():
        a, b = runners.SharedCommandRunner(None), runners.SharedCommandRunner(None)
        first = asyncio.ensure_future(a.run(argv, share_for=5))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(b.run(argv, share_for=5))
        await asyncio.sleep(0.05)
        first.cancel()
        got = await second
        await a.close()
        await b.close()
        return got, first.cancelled()

    got, cancelled = asyncio.run(go())
    assert cancelled and got.stdout.strip() == "listing"


def test_a_command_that_raised_is_not_shared_afterwards(tmp_path):
    """A failure to run (here: no such program; over SSH: a lost connection) is asked again, never reused."""
    import pytest

    from sciops.arrays import ssh as runners

    script = tmp_path / "qstat"

    async def go():
        u = runners.SharedCommandRunner(None)
        try:
            with pytest.raises(OSError):
                await u.run([str(script)], share_for=60)
            script.write_text("#!/bin/sh\necho listing\n")
            script.chmod(0o755)
            return await u.run([str(script)], share_for=60)
        finally:
            await u.close()

    assert asyncio.run(go()).stdout.strip() == "listing"
