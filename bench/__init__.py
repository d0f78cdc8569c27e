"""tproxy's benchmark (see bench/README.md). A package only so that ``bench.noop_plugins``
can be named in a tproxy configuration; run the bench with ``bash bench/run.sh``."""
