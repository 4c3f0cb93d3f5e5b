/*
 * apfa_mmap: maps part of a file read-only and shared, as an ArrayBuffer, so every server process (and every
 * search worker in one) that opens the same index version reads the same page-cache pages instead of holding a
 * copy of the vectors in its heap. Node 20 has no way to map a file; this is the one thing the addon does.
 *
 * map(path, offset, length) -> ArrayBuffer over bytes [offset, offset + length) of the file. The mapping is
 * PROT_READ, MAP_SHARED: writing through it faults, and it stays valid while the file is renamed or unlinked
 * (a retired version's directory removed from the cache). It is unmapped when the ArrayBuffer is collected or
 * its thread (a worker) ends. `offset` need not be page-aligned (the mapping starts at the page below it).
 *
 * Built by scripts/build.mjs into dist/native/apfa_mmap.node with the C compiler and the headers that ship with
 * Node; plain Node-API (no node-addon-api), so one build serves every Node >= 20 and Deno's Node-API.
 */
#define NAPI_VERSION 8
#include <node_api.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
  void* base;
  size_t length;
} mapping;

static void unmap_buffer(napi_env env, void* data, void* hint) {
  (void)env;
  (void)data;
  mapping* m = (mapping*)hint;
  munmap(m->base, m->length);
  free(m);
}

/* Throws `message` as a JS Error (or TypeError) and returns NULL for the caller to return. */
static napi_value fail(napi_env env, int type_error, const char* message) {
  if (type_error) napi_throw_type_error(env, NULL, message);
  else napi_throw_error(env, NULL, message);
  return NULL;
}

/* A non-negative integer that fits a double exactly, or -1. */
static double size_arg(napi_env env, napi_value v) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return -1;
  if (!(d >= 0) || d > 9007199254740991.0 || d != (double)(long long)d) return -1;
  return d;
}

static napi_value map_file(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3)
    return fail(env, 1, "map(path, offset, length) takes 3 arguments");
  char path[4096];
  size_t path_length;
  if (napi_get_value_string_utf8(env, argv[0], path, sizeof path, &path_length) != napi_ok)
    return fail(env, 1, "map: path must be a string");
  if (path_length >= sizeof path - 1) return fail(env, 1, "map: path is too long");
  double offset_d = size_arg(env, argv[1]);
  double length_d = size_arg(env, argv[2]);
  if (offset_d < 0 || length_d < 0) return fail(env, 1, "map: offset and length must be non-negative integers");
  size_t offset = (size_t)offset_d;
  size_t length = (size_t)length_d;

  char message[4300];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(message, sizeof message, "map: cannot open %s: %s", path, strerror(errno));
    return fail(env, 0, message);
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    snprintf(message, sizeof message, "map: cannot stat %s: %s", path, strerror(errno));
    close(fd);
    return fail(env, 0, message);
  }
  if ((unsigned long long)offset + length > (unsigned long long)st.st_size) {
    snprintf(message, sizeof message, "map: %s has %lld bytes, fewer than offset %zu + length %zu", path, (long long)st.st_size, offset, length);
    close(fd);
    return fail(env, 0, message);
  }
  napi_value buffer;
  if (length == 0) {
    close(fd);
    void* unused;
    if (napi_create_arraybuffer(env, 0, &unused, &buffer) != napi_ok) return fail(env, 0, "map: cannot create an empty ArrayBuffer");
    return buffer;
  }
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t start = offset / page * page;
  size_t skip = offset - start;
  void* base = mmap(NULL, skip + length, PROT_READ, MAP_SHARED, fd, (off_t)start);
  int mmap_errno = errno;
  close(fd); /* the mapping keeps the file */
  if (base == MAP_FAILED) {
    snprintf(message, sizeof message, "map: cannot map %zu bytes of %s: %s", length, path, strerror(mmap_errno));
    return fail(env, 0, message);
  }
  mapping* m = (mapping*)malloc(sizeof(mapping));
  if (!m) {
    munmap(base, skip + length);
    return fail(env, 0, "map: out of memory");
  }
  m->base = base;
  m->length = skip + length;
  if (napi_create_external_arraybuffer(env, (char*)base + skip, length, unmap_buffer, m, &buffer) != napi_ok) {
    munmap(base, skip + length);
    free(m);
    return fail(env, 0, "map: this runtime cannot wrap mapped memory in an ArrayBuffer");
  }
  return buffer;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "map", NAPI_AUTO_LENGTH, map_file, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "map", fn) != napi_ok) return NULL;
  return exports;
}
