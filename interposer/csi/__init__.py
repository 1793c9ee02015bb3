"""The CSI driver: Kubernetes pods get interposed volumes through the Container Storage Interface.

Identity, Node and Controller services live in modules of their own; they share
request validation (``validation``), path confinement (``paths``), volume
attributes (``attributes``), the on-disk state (``state``) and the supervisor of
the per-volume interposer processes (``supervisor``).  ``server`` binds them to
gRPC on a unix socket.
"""
