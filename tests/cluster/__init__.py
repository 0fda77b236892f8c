"""The test suite's Kubernetes: a real local control plane with kwok's fake nodes, and the operator run as a
subprocess. Development tooling only: neither the rljob wheel nor the images contain it.

* :mod:`tests.cluster.controlplane`: etcd, kube-apiserver, controller manager, scheduler and kwok
  (:class:`~tests.cluster.controlplane.ControlPlane`), kubectl helpers, :func:`~tests.cluster.controlplane.wait_for`;
* :mod:`tests.cluster.pki`: the throw-away CA and certificates (:class:`~tests.cluster.pki.PKI`), kubeconfigs;
* :mod:`tests.cluster.processes`: child processes that die with the test run, free ports, log tails;
* :mod:`tests.cluster.operator_process`: `rljob operator` as a subprocess
  (:class:`~tests.cluster.operator_process.OperatorProcess`);
* :mod:`tests.cluster.chart`: the operator as the Helm chart deploys it (its ServiceAccount, RBAC and flags)
  (:class:`~tests.cluster.chart.ChartOperator`);
* :mod:`tests.cluster.devcluster`: `make dev-cluster`, also ``python -m tests.cluster``.

The modules import nothing from here, so that ``python -m tests.cluster.controlplane`` loads its module once.
"""
