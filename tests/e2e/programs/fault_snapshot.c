/* Preloaded beside the shim to play two kinds of fault on the directory $FAULT_DIR.
 *
 * With $FAULT_SNAPSHOTS: before every call that changes $FAULT_DIR (an open that may create
 * or truncate a file there, a write to a file opened there, a rename or unlink of a name
 * there), copies every file of $FAULT_DIR into $FAULT_SNAPSHOTS/<pid>.<n>/. A SIGKILL between
 * two system calls leaves the directory exactly as it is at that instant (the writer keeps
 * nothing in user-space buffers), so the snapshots are every state a kill of the process can
 * leave, in one run: the tests judge each of them.
 *
 * With $FAULT_PLANT_LINK=<file>: the first $FAULT_PLANT_TIMES (default 1) times the process
 * opens a name in $FAULT_DIR with O_CREAT, after the first $FAULT_PLANT_AFTER (default 0),
 * a symbolic link to <file> is planted at that very name just before: an attacker who
 * guessed the temporary name and won the race.
 *
 * build: cc -shared -fPIC -O1 -o fault_snapshot.so fault_snapshot.c -ldl
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static __thread int inside;      /* the copy's own calls are not watched */
static unsigned char watched[4096]; /* descriptors opened in $FAULT_DIR */
static int snapshots;

static int (*real_open)(const char*, int, ...);
static ssize_t (*real_write)(int, const void*, size_t);
static int (*real_rename)(const char*, const char*);
static int (*real_unlink)(const char*);
static int (*real_close)(int);

static void resolve(void) {
  if (real_open) return;
  real_write = dlsym(RTLD_NEXT, "write");
  real_rename = dlsym(RTLD_NEXT, "rename");
  real_unlink = dlsym(RTLD_NEXT, "unlink");
  real_close = dlsym(RTLD_NEXT, "close");
  real_open = dlsym(RTLD_NEXT, "open");
}

static const char* directory(void) {
  const char* dir = getenv("FAULT_DIR");
  return dir && *dir ? dir : NULL;
}

/* Whether `path` names an entry directly in $FAULT_DIR (absolute paths only). */
static int in_directory(const char* path) {
  const char* dir = directory();
  if (!dir || !path) return 0;
  size_t n = strlen(dir);
  return strncmp(path, dir, n) == 0 && path[n] == '/' && !strchr(path + n + 1, '/');
}

static void copy_file(const char* from, const char* to) {
  int in = real_open(from, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (in < 0) return; /* gone meanwhile, or a link: recorded by its name only */
  int out = real_open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  char buffer[65536];
  ssize_t got;
  while (out >= 0 && (got = read(in, buffer, sizeof(buffer))) > 0) real_write(out, buffer, (size_t)got);
  if (out >= 0) real_close(out);
  real_close(in);
}

static void snapshot(void) {
  const char* dir = directory();
  const char* where = getenv("FAULT_SNAPSHOTS");
  if (!dir || !where || inside) return;
  inside = 1;
  char target[PATH_MAX];
  snprintf(target, sizeof(target), "%s/%d.%04d", where, (int)getpid(), snapshots++);
  if (mkdir(target, 0755) == 0) {
    DIR* listing = opendir(dir);
    struct dirent* entry;
    while (listing && (entry = readdir(listing))) {
      if (entry->d_name[0] == '.' && (!entry->d_name[1] || (entry->d_name[1] == '.' && !entry->d_name[2])))
        continue;
      char from[PATH_MAX], to[PATH_MAX];
      snprintf(from, sizeof(from), "%s/%s", dir, entry->d_name);
      snprintf(to, sizeof(to), "%s/%s", target, entry->d_name);
      copy_file(from, to);
    }
    if (listing) closedir(listing);
  }
  inside = 0;
}

static int creates, planted;

static void plant_link(const char* path) {
  const char* victim = getenv("FAULT_PLANT_LINK");
  const char* times = getenv("FAULT_PLANT_TIMES");
  const char* after = getenv("FAULT_PLANT_AFTER");
  if (!victim || !*victim) return;
  if (++creates <= (after ? atoi(after) : 0)) return;
  if (planted >= (times ? atoi(times) : 1)) return;
  ++planted;
  symlink(victim, path);
}

static int open_watched(const char* path, int flags, mode_t mode) {
  resolve();
  const int watch = !inside && in_directory(path);
  if (watch && (flags & (O_CREAT | O_TRUNC))) snapshot();
  if (watch && (flags & O_CREAT)) plant_link(path);
  int fd = real_open(path, flags, mode);
  if (watch && fd >= 0 && fd < (int)sizeof(watched)) watched[fd] = 1;
  return fd;
}

int open(const char* path, int flags, ...) {
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list args;
    va_start(args, flags);
    mode = va_arg(args, mode_t);
    va_end(args);
  }
  return open_watched(path, flags, mode);
}

int open64(const char* path, int flags, ...) {
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list args;
    va_start(args, flags);
    mode = va_arg(args, mode_t);
    va_end(args);
  }
  return open_watched(path, flags, mode);
}

ssize_t write(int fd, const void* data, size_t size) {
  resolve();
  if (!inside && fd >= 0 && fd < (int)sizeof(watched) && watched[fd]) snapshot();
  return real_write(fd, data, size);
}

int close(int fd) {
  resolve();
  if (fd >= 0 && fd < (int)sizeof(watched)) watched[fd] = 0;
  return real_close(fd);
}

int rename(const char* from, const char* to) {
  resolve();
  if (!inside && (in_directory(from) || in_directory(to))) snapshot();
  return real_rename(from, to);
}

int unlink(const char* path) {
  resolve();
  if (!inside && in_directory(path)) snapshot();
  return real_unlink(path);
}
