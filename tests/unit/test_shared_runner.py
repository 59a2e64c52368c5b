"""SharedCommandRunner without SSH (local commands): answers shared within share_for, one pool per event loop."""
from __future__ import annotations

import asyncio


def test_identical_asks_share_one_command_and_the_last_user_closes(tmp_path):
    from sciops import runners

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
    from sciops import runners

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
