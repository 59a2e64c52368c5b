"""The SciOps task runner's package: what runs on the compute node, standard library only.

``sciops_task.py`` (beside this package, both copied into each run's ``work/job/``) is the entry
script; its docstring tells the whole story of a task. The modules, by concern:

* :mod:`sciops_node.contract`: everything the node and the Airflow side share (file layout, status
  lines, the :class:`~sciops_node.contract.Manifest`, the heap rule, exit codes), with
  :mod:`sciops_node.tables` (the chunk tables). The Airflow side needs these (and
  ``jvm.bioformats_version``) only.
* :mod:`sciops_node.chunk`: ``ChunkRunner``, a chunk's books and its run loop;
* :mod:`sciops_node.session`: driving one JVM through ``driver.ijm``: stalls, timeouts, chaining;
* :mod:`sciops_node.units`: one image's argument, expected outputs, tables and printed log;
* :mod:`sciops_node.jvm`: Xvfb and the JVM's command line;
* :mod:`sciops_node.claims`: which runner runs a chunk now (chaining on the local backend);
* :mod:`sciops_node.hygiene`: children that die with the runner, scratch cleanup, the macro's
  environment, the scheduler's environment;
* :mod:`sciops_node.logcap`: the task log's size bound.

The package has a name of its own (not ``node``, ``contract``...): the Airflow side puts
``include/job`` on ``sys.path``, where a generic top-level name could shadow another module.
"""
