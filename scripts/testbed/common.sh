# Sourced by the testbed scripts.
# Is process $1 alive and not a zombie? (Nothing reaps orphans in some containers, and
# kill -0 succeeds on a zombie.)
running() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(cut -d')' -f2 "/proc/$1/stat" | awk '{print $1}')" != Z ]; }
