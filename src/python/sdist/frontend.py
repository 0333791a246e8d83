# imgbuild's PEP 517 build frontend. Runs inside the build container with the target's own
# interpreter, the build requirements on PYTHONPATH, no network, as an unprivileged user.
# argv[1]: a JSON file {"source", "backend", "backend_path", "mode", "requires_out",
# "wheel_dir", "wheel_name_out"}; mode "requires" stops after get_requires_for_build_wheel.
import importlib
import json
import os
import sys

with open(sys.argv[1]) as f:
    cfg = json.load(f)
os.chdir(cfg["source"])
paths = [os.path.abspath(p) for p in cfg["backend_path"]]
for p in reversed(paths):
    sys.path.insert(0, p)
module, _, attrs = cfg["backend"].partition(":")
module = module.strip()
backend = importlib.import_module(module)
if paths:
    where = os.path.abspath(getattr(sys.modules[module], "__file__", None) or "")
    if not any(where.startswith(p + os.sep) for p in paths):
        sys.exit("imgbuild: backend %s was loaded from %s, not from its backend-path %s"
                 % (cfg["backend"], where, cfg["backend_path"]))
for a in filter(None, attrs.strip().split(".")):
    backend = getattr(backend, a)
hook = getattr(backend, "get_requires_for_build_wheel", None)
requires = list(hook({})) if hook is not None else []
with open(cfg["requires_out"], "w") as f:
    json.dump(requires, f)
if cfg["mode"] == "build":
    name = backend.build_wheel(cfg["wheel_dir"], {})
    with open(cfg["wheel_name_out"], "w") as f:
        f.write(name)
