"""A run's images cut into array tasks: how many a task gets (``images_per_task``, 0 = auto) and the chunks."""
from __future__ import annotations


#: ``images_per_task: 0``: at least this many images per task, ...
AUTO_MIN_PER_TASK = 25
#: ... and, where the slots are known (the local backend), chunks of about this many a slot at first.
#: There a slot's runner goes on with the array's next chunks in its warm JVM (sciops_task.py's
#: chaining): a JVM costs more than its start (~0.5 s beside a busy JVM), its JIT warms up over its first
#: ~1,000 images (count_nuclei on 128 px images: 150-250 ms for the first 10, 40-90 ms to the 50th,
#: 15-20 ms to the 400th, 8 ms from the 1,600th). So chunks cost little but a claim, and the tapering
#: tail evens out the slots' ends without a JVM start each.
AUTO_TASKS_PER_SLOT = 2
#: ... then tapering (guided scheduling): each next chunk is the images left / slots, down to this
#: fraction of the first size, so the slots run out of work at nearly the same time. With 8 even
#: chunks a slot, one slot waited 2.8-6.9 s for the other at the end of a 20,000-image run; with
#: one long chunk a slot and one short one (no chaining), 0.9-6.9 s.
AUTO_TAPER = 16


def images_per_task(n_images: int, given: int, slots: int | None) -> int:
    """The (first) chunk size: ``given``, or for 0 (auto) :data:`AUTO_MIN_PER_TASK`, more when ``slots`` (tasks
    run at once, when the backend knows) would otherwise each run more than :data:`AUTO_TASKS_PER_SLOT` tasks."""
    if given:
        return given
    if not slots:
        return AUTO_MIN_PER_TASK
    return max(AUTO_MIN_PER_TASK, -(-n_images // (slots * AUTO_TASKS_PER_SLOT)))


def chunk_sizes(n_images: int, given: int, slots: int | None) -> list[int]:
    """The images in each task, in task order: ``given`` (or 25) each; auto with known slots tapers.

    Auto with known slots: chunks of :func:`images_per_task` while there is plenty left, then the
    images left ÷ slots, never under 1/:data:`AUTO_TAPER` of the first size (nor 25). Schedulers start
    array tasks in index order, so the small chunks run last and even out the slots' ends.
    """
    size = images_per_task(n_images, given, slots)
    if given or not slots or size <= AUTO_MIN_PER_TASK:
        return [min(size, n_images - i) for i in range(0, n_images, size)]
    smallest = max(AUTO_MIN_PER_TASK, -(-size // AUTO_TAPER))
    sizes, left = [], n_images
    while left > 0:
        s = min(size, max(smallest, -(-left // slots)))
        if left - s < smallest:   # no crumb of a chunk at the very end: in the last one, or the last two halve it
            s = left if left - s < smallest // 2 or left < 2 * AUTO_MIN_PER_TASK else -(-left // 2)
        sizes.append(s)
        left -= s
    return sizes


def chunk(images: list[str], sizes: list[int]) -> list[list[str]]:
    out, at = [], 0
    for size in sizes:
        out.append(images[at:at + size])
        at += size
    return out
