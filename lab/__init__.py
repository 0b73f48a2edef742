"""The migration lab: KubeVirt-shaped nodes, virt-launcher pods and guests on one machine.

Real libvirt daemons (one per "virt-launcher pod"), real QEMU guests under TCG, network
namespaces for nodes and pods, a DHCP server per pod and real live migrations between the
daemons. Tests, the README demo and the benchmark all drive it through
:func:`lab.scenario.run_scenario` or the :class:`lab.cluster.Lab` it is built on.
"""
