"""The CSI driver: Kubernetes pods get interposed volumes through the Container Storage Interface.

Identity, Node and Controller services live in modules of their own; they share
request validation (``validation``), path confinement (``paths``), volume
attributes (``attributes``) and the on-disk state (``state``).  ``server`` binds
them to gRPC on a unix socket.  Each volume is served apart from the plugin, so
it outlives it: the ``supervisor`` mounts /dev/fuse (``fusemount``), hands the
descriptor (``handover``) to the volume's server (``volume_server``), which a
``launcher`` runs as a detached process in its own cgroup or, in Kubernetes, as
a pod (``pods``); ``probe`` bounds every look at a mount.
"""
