#!/usr/bin/env bash
# Builds the optional faiss-node addon (used by the `faiss` index engine) against Debian's libfaiss and installs
# it into node_modules without touching package.json or package-lock.json.
#
# Why not `npm install faiss-node`: its install script downloads a prebuilt binary from GitHub or clones FAISS
# from GitHub, and cmake-js downloads Node headers from nodejs.org. None of that is reachable here, so we take
# the npm tarball (which carries the addon's single source file, src/faiss.cc), compile it with a CMakeLists of
# our own against the system libfaiss and the headers shipped with the running Node, and install the result.
#
# Usage: scripts/build-faiss-node.sh            (as root, or with the Debian packages already installed)
# Env:   FAISS_NODE_VERSION (default 0.5.1), NODE_ADDON_API_VERSION (default 6, what faiss-node declares)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="${FAISS_NODE_VERSION:-0.5.1}"
ADDON_API="${NODE_ADDON_API_VERSION:-6}"

need=(libfaiss-dev libopenblas-dev cmake g++ make)
if ! dpkg -s "${need[@]}" >/dev/null 2>&1; then
  echo "build-faiss-node: installing ${need[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

NODE_INC="$(node -p 'require("node:path").resolve(process.execPath, "../../include/node")')"
if [ ! -f "$NODE_INC/node_api.h" ]; then
  echo "build-faiss-node: no Node headers at $NODE_INC (this Node install does not ship include/node)" >&2
  exit 1
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
npm pack --silent "faiss-node@$VERSION" "node-addon-api@$ADDON_API" >/dev/null
mkdir src-pkg addon-api
tar xzf faiss-node-"$VERSION".tgz -C src-pkg --strip-components=1
tar xzf node-addon-api-*.tgz -C addon-api --strip-components=1

# faiss-node 0.5.1 never frees three allocations: toBuffer's VectorIOWriter (the whole serialised index, each call),
# fromBuffer's VectorIOReader (a whole copy of the buffer, each call) and search's query array (each call). apfa
# serialises every build and loads every recall-check setting and served version from a buffer, so a 200k x 384
# IVF256 build with two settings checked grew the process by 900 MB, a 1M x 384 one ran a 24 GiB machine out of
# memory, and a server leaked its queries' floats on every search. Each is made owned by a std::unique_ptr; the
# script stops if the source no longer reads as expected. Recorded as `apfa.leaks_fixed: true`.
node -e '
  const fs = require("node:fs");
  const file = "src-pkg/src/faiss.cc";
  let src = fs.readFileSync(file, "utf8");
  const fixes = [
    ["faiss::VectorIOWriter *writer = new faiss::VectorIOWriter();", "auto writer_owner = std::make_unique<faiss::VectorIOWriter>(); faiss::VectorIOWriter *writer = writer_owner.get();"],
    ["faiss::VectorIOReader *reader = new faiss::VectorIOReader();", "auto reader_owner = std::make_unique<faiss::VectorIOReader>(); faiss::VectorIOReader *reader = reader_owner.get();"],
    ["float *xq = new float[length];", "auto xq_owner = std::make_unique<float[]>(length); float *xq = xq_owner.get();"],
  ];
  for (const [from, to] of fixes) {
    const n = src.split(from).length - 1;
    if (n !== 1) { console.error("build-faiss-node: expected one \"" + from + "\" in " + file + ", found " + n); process.exit(1); }
    src = src.replace(from, to);
  }
  // add, train and search also take a Float32Array, copied in one memcpy. faiss-node reads its JS Array argument
  // one element at a time through Node-API: at 200k x 384 that was 16 s of a 23 s add and most of a 19 s train
  // (100k training rows), where FAISS itself needs a few seconds. Recorded as `apfa.f32_arrays: true`.
  const f32 = [
    ["if (!info[0].IsArray())", "if (!info[0].IsArray() && !apfa_is_f32(info[0]))"],
    ["Napi::Array arr = info[0].As<Napi::Array>();\n    size_t length = arr.Length();",
     "const bool f32 = apfa_is_f32(info[0]);\n    Napi::Array arr = f32 ? Napi::Array::New(env) : info[0].As<Napi::Array>();\n    size_t length = f32 ? info[0].As<Napi::Float32Array>().ElementLength() : arr.Length();"],
    ["for (size_t i = 0; i < length; i++)\n    {\n      Napi::Value val = arr[i];",
     "if (f32) std::memcpy(XS, info[0].As<Napi::Float32Array>().Data(), length * sizeof(float));\n    else for (size_t i = 0; i < length; i++)\n    {\n      Napi::Value val = arr[i];"],
  ];
  for (const [fn, xs] of [["add", "xb"], ["train", "xb"], ["search", "xq"]]) {
    const start = src.indexOf("Napi::Value " + fn + "(const Napi::CallbackInfo &info)");
    const end = src.indexOf("\n  Napi::Value ", start + 12); // the next method (bodies indent further)
    if (start < 0 || end < 0) { console.error("build-faiss-node: no " + fn + " method in " + file); process.exit(1); }
    let body = src.slice(start, end);
    for (const [from, to] of f32) {
      const n = body.split(from).length - 1;
      if (n !== 1) { console.error("build-faiss-node: expected one \"" + from + "\" in " + fn + ", found " + n); process.exit(1); }
      body = body.replace(from, to.replace("XS", xs));
    }
    src = src.slice(0, start) + body + src.slice(end);
  }
  const helper = "static bool apfa_is_f32(const Napi::Value &v) { return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array; }\n";
  fs.writeFileSync(file, "#include <memory>\n#include <cstring>\n#include <napi.h>\n" + helper + src);
'

# faiss-node 0.5.1 is written against FAISS 1.7.4, which moved `idx_t` from faiss::Index to namespace faiss;
# Debian bookworm ships 1.7.3. A force-included shim gives older versions the newer name.
#
# The same header turns off the prefetch of FAISS's on-disk inverted lists in every index faiss-node reads. Each
# IVF search over on-disk lists (the `faiss` engine's `mmap`) first starts up to 32 threads that read every probed
# list once more, to pull it off a slow disk; apfa maps the lists from the page cache, where that pass only adds
# CPU: with Debian's FAISS 1.7.3, 200k x 384 IVF256 at nprobe 32, 17 ms of CPU per query with it and 6 ms without,
# the same as lists in the heap. faiss.cc calls `faiss::read_index` in two places; a macro routes both through a
# wrapper declared before it. The package.json installed below records it (`apfa.ondisk_prefetch: false`), so the
# engine can tell this build from one that still prefetches.
#
# The wrapper also reads every index with IO_FLAG_READ_ONLY. FAISS's on-disk lists otherwise open their data file
# with fopen "r+" and map it PROT_WRITE | MAP_SHARED; apfa points them at the published index file itself, which
# must be neither writable by the server nor written through a stray pointer. Recorded as
# `apfa.ondisk_read_only: true`.
#
# And it sets an IVF index's parallel_mode, which FAISS does not store in the file, to 2: each query's probed lists
# are scanned on every OpenMP thread. FAISS's default (0) parallelises over the queries of one call only, so a lone
# query ran on one core while exact search uses them all. Debian's FAISS 1.7.3, 300k x 384 IVF512 at nprobe 24,
# OMP_WAIT_POLICY=PASSIVE, 2 cores: one query 4.31 -> 2.47 ms p50; a call of 300 queries 2.14 -> 2.15 ms each.
# Recorded as `apfa.ivf_parallel_mode: 2`.
cat > compat.h <<'H'
#include <faiss/Index.h>
#include <faiss/IVFlib.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_io.h>
#include <faiss/invlists/OnDiskInvertedLists.h>
#if FAISS_VERSION_MAJOR == 1 && (FAISS_VERSION_MINOR < 7 || (FAISS_VERSION_MINOR == 7 && FAISS_VERSION_PATCH < 4))
namespace faiss { using idx_t = Index::idx_t; }
#endif
namespace faiss {
template <typename Source>
inline Index* apfa_read_index(Source source) {
  Index* index = read_index(source, IO_FLAG_READ_ONLY);
  if (IndexIVF* ivf = ivflib::try_extract_index_ivf(index)) {
    if (auto* od = dynamic_cast<OnDiskInvertedLists*>(ivf->invlists)) od->prefetch_nthread = 0;
    ivf->parallel_mode = 2;
  }
  return index;
}
}
#define read_index apfa_read_index
H

# faiss.cc catches faiss::FaissException and rethrows into JS by hand, so it is written for C++ exceptions on.
cat > src-pkg/CMakeLists.txt <<EOF
cmake_minimum_required(VERSION 3.18)
project(faiss_node LANGUAGES CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_BUILD_TYPE Release)
find_package(OpenMP REQUIRED)
find_package(faiss REQUIRED)
add_library(faiss-node SHARED src/faiss.cc)
set_target_properties(faiss-node PROPERTIES PREFIX "" SUFFIX ".node" POSITION_INDEPENDENT_CODE ON)
target_compile_definitions(faiss-node PRIVATE NAPI_VERSION=8 NAPI_CPP_EXCEPTIONS)
target_compile_options(faiss-node PRIVATE -include "$WORK/compat.h")
target_include_directories(faiss-node PRIVATE "$NODE_INC" "$WORK/addon-api")
target_link_libraries(faiss-node PRIVATE faiss OpenMP::OpenMP_CXX)
EOF

cmake -S src-pkg -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --parallel "$(nproc)"

# Package what `require("faiss-node")` needs: lib/ plus the addon where `bindings` looks (build/Release). The
# install script, gypfile flag and build-only dependencies go, so npm neither rebuilds nor fetches them.
mkdir -p out/build/Release
cp -r src-pkg/lib src-pkg/LICENSE src-pkg/README.md src-pkg/package.json out/
cp build/faiss-node.node out/build/Release/
node -e '
  const fs = require("node:fs");
  const p = JSON.parse(fs.readFileSync("out/package.json", "utf8"));
  delete p.scripts; delete p.gypfile; delete p.binary; delete p.devDependencies;
  p.dependencies = { bindings: p.dependencies.bindings };
  p.files = ["lib", "build/Release/faiss-node.node"];
  p.apfa = { ondisk_prefetch: false, ondisk_read_only: true, ivf_parallel_mode: 2, leaks_fixed: true, f32_arrays: true };
  fs.writeFileSync("out/package.json", JSON.stringify(p, null, 2));
'
(cd out && npm pack --silent >/dev/null)
TGZ="$WORK/out/faiss-node-$VERSION.tgz"

cd "$ROOT"
npm install --no-save --ignore-scripts --no-audit --no-fund "$TGZ"
node -e 'const f = require("faiss-node"); const i = new f.IndexFlatIP(2); i.add([1, 0, 0, 1]);
  const r = i.search([1, 0], 1); if (r.labels[0] !== 0) process.exit(1); console.log("faiss-node OK");'
