"""Operating the job's surroundings: storage (local, NFS or a bucket), the nightly lock, the quiet
environment every distune process and Ray worker shares. Imports only distune.errors."""

from distune._lazy import exports

_NAMES = {
    "HEARD": "environment",
    "Locked": "lock",
    "UserCode": "usercode",
    "UserCodeError": "usercode",
    "anchor_code": "usercode",
    "backend_environment": "environment",
    "cause_of": "environment",
    "read_code": "usercode",
    "NotPrivate": "private",
    "QUIET_ENV": "environment",
    "checkpoint_gone": "storage",
    "checkpoint_path": "storage",
    "fetch": "storage",
    "in_mirror": "storage",
    "is_uri": "storage",
    "join": "storage",
    "local_copy": "storage",
    "local_ray_environment": "environment",
    "job_runtime_env": "environment",
    "mirror": "storage",
    "pid_alive": "lock",
    "prepare_remote": "storage",
    "check_trusted": "private",
    "private_dir": "private",
    "probe": "storage",
    "protect_token": "environment",
    "publish": "storage",
    "quiet_environment": "environment",
    "quiet_tensorflow": "environment",
    "stderr_silenced": "environment",
    "surface_warnings": "environment",
    "refresh": "storage",
    "remote_of": "storage",
    "resume_command": "storage",
    "root_of": "storage",
    "sibling": "storage",
    "taken_error": "storage",
    "where": "storage",
}
__all__ = sorted(_NAMES)
__getattr__ = exports(__name__, _NAMES)
