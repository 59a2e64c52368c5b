"""The SciOps task runner's package: what runs on the compute node, standard library only.

``sciops_task.py`` (beside this package, both copied into each run's ``work/job/``) is the entry
script. :mod:`sciops_node.contract` is everything the node and the Airflow side share (file layout,
status lines, the :class:`~sciops_node.contract.Manifest`, the heap rule, exit codes), with
:mod:`sciops_node.tables` (the chunk tables).

The package has a name of its own (not ``node``, ``contract``...): the Airflow side puts
``include/job`` on ``sys.path``, where a generic top-level name could shadow another module.
"""
