/*
 * CodeBeaker's warm worker for Node.js, native half: a Node-API addon that turns a pre-started
 * Node process into a fork server. Node has no fork(), and its start-up (100-200 ms) is most of
 * the cost of a short JavaScript run; forking a process that has already started leaves each
 * run only its own work, and each run still gets a fresh process that nothing of an earlier run
 * can reach.
 *
 * The protocol is the one every warm worker speaks (see assets/warm/python.py): requests arrive
 * as one JSON message each on the SOCK_SEQPACKET socket on fd 3, with five descriptors attached
 * (stdin, stdout, stderr, snippet input, snippet result). serve() sends {"ready": true} once,
 * then for each request forks: the parent answers {"pid": n}, reaps the child and answers
 * {"exit": status, "cpu_ns": n, "maxrss": bytes}, forever; the child returns the request's JSON
 * text to JavaScript with the descriptors installed as 0-4, in its own session, with a fresh
 * libuv loop, and runs the program (assets/warm/node.js).
 *
 * Forking is safe because the worker never runs JavaScript concurrently: it is started with V8's
 * --single-threaded (no background compiler or GC threads hold locks or post work), it never
 * used the libuv thread pool, and the child recreates the loop's epoll, signal and async
 * descriptors with uv_loop_fork(). The worker is started with descriptors 0-4 already taken, so
 * libuv's own descriptors are never among the ones a run replaces.
 *
 * A run keeps nothing of the worker (see assets/warm/python.py for why it matters: a fork is a
 * copy of the worker's memory and descriptors):
 * - descriptors: every descriptor above 4 the worker holds (its loop's, its platform thread's,
 *   anything Node opened) is covered with a placeholder in the child before uv_loop_fork(), which
 *   closes and recreates the loop's own; whatever still shows the placeholder afterwards is
 *   closed. A run then holds 0-4, the fresh descriptors of its own loop, and what it opens;
 * - memory: the worker never parses a request (the child does) and zeroes its bytes once it
 *   has forked;
 * - identity: the worker runs under a uid of its own with CAP_SETUID and CAP_SETGID only, and
 *   become() gives the child the run's uid and gid with no capability left, so a run cannot
 *   signal the worker or change its rlimits or priority.
 *
 * The Node-API declarations are written out here (they are a stable C ABI, resolved against the
 * node binary when the addon loads), so building needs only a C compiler, not Node's headers.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct napi_env__ *napi_env;
typedef struct napi_value__ *napi_value;
typedef struct napi_callback_info__ *napi_callback_info;
typedef int napi_status;
typedef napi_value (*napi_callback)(napi_env env, napi_callback_info info);
struct uv_loop_s;

extern napi_status napi_create_function(napi_env env, const char *name, size_t length,
                                        napi_callback cb, void *data, napi_value *result);
extern napi_status napi_set_named_property(napi_env env, napi_value object, const char *name,
                                           napi_value value);
extern napi_status napi_create_string_utf8(napi_env env, const char *str, size_t length,
                                           napi_value *result);
extern napi_status napi_get_cb_info(napi_env env, napi_callback_info info, size_t *argc,
                                    napi_value *argv, napi_value *this_arg, void **data);
extern napi_status napi_get_value_double(napi_env env, napi_value value, double *result);
extern napi_status napi_get_value_string_utf8(napi_env env, napi_value value, char *buf,
                                              size_t bufsize, size_t *result);
extern napi_status napi_create_double(napi_env env, double value, napi_value *result);
extern napi_status napi_throw_error(napi_env env, const char *code, const char *msg);
extern napi_status napi_get_uv_event_loop(napi_env env, struct uv_loop_s **loop);
extern int uv_loop_fork(struct uv_loop_s *loop);

#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

#define CTL_FD 3
#define RUN_FDS 5
#define MAX_REQUEST (1 << 20)
#define MAX_OWN_FDS 256

static char *request;

/* The worker's own descriptors above 4 when it forked, by number and identity. */
struct own_fd {
    int fd;
    dev_t dev;
    ino_t ino;
};
static struct own_fd own_fds[MAX_OWN_FDS];
static int own_count;

static void send_text(const char *text) {
    while (send(CTL_FD, text, strlen(text), MSG_NOSIGNAL) < 0 && errno == EINTR) {
    }
}

static napi_value throw_errno(napi_env env, const char *what) {
    char message[256];
    snprintf(message, sizeof message, "%s: %s", what, strerror(errno));
    napi_throw_error(env, NULL, message);
    return NULL;
}

/* Receives one request and its descriptors. Returns the message length, 0 at end of input. */
static ssize_t receive(int fds[RUN_FDS], int *nfds) {
    char control[CMSG_SPACE(sizeof(int) * RUN_FDS)];
    struct iovec iov = {.iov_base = request, .iov_len = MAX_REQUEST - 1};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = control,
                         .msg_controllen = sizeof control};
    ssize_t n;
    do {
        n = recvmsg(CTL_FD, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    *nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < count; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                if (*nfds < RUN_FDS) {
                    fds[(*nfds)++] = fd;
                } else {
                    close(fd);
                }
            }
        }
    }
    if (n >= 0) {
        request[n] = '\0';
    }
    return n;
}

/* In the child: the run's descriptors become 0-4 (moved out of the way first, since a received
 * descriptor may already sit on one of those numbers). */
static int install(const int fds[RUN_FDS]) {
    int high[RUN_FDS];
    for (int i = 0; i < RUN_FDS; i++) {
        high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 100);
        if (high[i] < 0) {
            return -1;
        }
        close(fds[i]);
    }
    for (int i = 0; i < RUN_FDS; i++) {
        if (dup2(high[i], i) < 0) {
            return -1;
        }
        close(high[i]);
    }
    return 0;
}

/* Lists the worker's descriptors above 4 but the run's `skip`. -1 when there are too many. */
static int list_own_fds(const int skip[RUN_FDS]) {
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL) {
        return -1;
    }
    own_count = 0;
    int ok = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        char *end;
        long fd = strtol(entry->d_name, &end, 10);
        if (*end != '\0' || end == entry->d_name || fd < RUN_FDS || fd == dirfd(dir)) {
            continue;
        }
        int is_run_fd = 0;
        for (int i = 0; i < RUN_FDS; i++) {
            is_run_fd |= skip[i] == fd;
        }
        struct stat st;
        if (is_run_fd || fstat((int)fd, &st) < 0) {
            continue;
        }
        if (own_count == MAX_OWN_FDS) {
            ok = -1;
            break;
        }
        own_fds[own_count++] = (struct own_fd){.fd = (int)fd, .dev = st.st_dev, .ino = st.st_ino};
    }
    closedir(dir);
    return ok;
}

static int is_file(int fd, dev_t dev, ino_t ino) {
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

/* In the child, before uv_loop_fork(): covers each of the worker's descriptors with a placeholder
 * (the read end of a fresh pipe), so that nothing of the worker stays reachable, while libuv may
 * still close the numbers it owns. Returns the placeholder pipe's descriptors. */
static int cover_own_fds(int placeholder[2], struct stat *mark) {
    if (pipe2(placeholder, O_CLOEXEC) < 0 || fstat(placeholder[0], mark) < 0) {
        return -1;
    }
    for (int i = 0; i < own_count; i++) {
        const struct own_fd *o = &own_fds[i];
        /* A number the fork handlers reused (libuv's signal lock pipe) holds something new. */
        if (o->fd != placeholder[0] && o->fd != placeholder[1] && is_file(o->fd, o->dev, o->ino) &&
            dup3(placeholder[0], o->fd, O_CLOEXEC) < 0) {
            return -1;
        }
    }
    return 0;
}

/* After uv_loop_fork(): closes every placeholder libuv did not close itself. */
static void close_placeholders(const int placeholder[2], const struct stat *mark) {
    for (int i = 0; i < own_count; i++) {
        int fd = own_fds[i].fd;
        if (fd != placeholder[0] && fd != placeholder[1] && is_file(fd, mark->st_dev, mark->st_ino)) {
            close(fd);
        }
    }
    close(placeholder[0]);
    close(placeholder[1]);
}

/* V8 marks its heap pages MADV_DONTFORK, which would leave a forked child without its heap.
 * The worker runs no JavaScript once it serves, so its heap no longer changes: undo the mark
 * once, on every mapping. */
static void allow_fork_of_every_mapping(void) {
    FILE *maps = fopen("/proc/self/maps", "re");
    if (maps == NULL) {
        return;
    }
    char line[512];
    while (fgets(line, sizeof line, maps) != NULL) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx", &start, &end) == 2 && end > start) {
            /* Special mappings ([vvar] and the like) refuse: they are shared anyway. */
            madvise((void *)start, end - start, MADV_DOFORK);
        }
    }
    fclose(maps);
}

/* serve(): never returns in the worker; returns the request's JSON text in each child. */
static napi_value serve(napi_env env, napi_callback_info info) {
    (void)info;
    struct uv_loop_s *loop = NULL;
    if (napi_get_uv_event_loop(env, &loop) != 0 || loop == NULL) {
        napi_throw_error(env, NULL, "no event loop");
        return NULL;
    }
    request = malloc(MAX_REQUEST);
    if (request == NULL) {
        return throw_errno(env, "allocating the request buffer");
    }
    allow_fork_of_every_mapping();
    send_text("{\"ready\": true}");
    for (;;) {
        int fds[RUN_FDS];
        int nfds = 0;
        ssize_t n = receive(fds, &nfds);
        if (n <= 0) {
            _exit(n == 0 ? 0 : 1);
        }
        if (nfds != RUN_FDS) {
            for (int i = 0; i < nfds; i++) {
                close(fds[i]);
            }
            send_text("{\"error\": \"a request needs five descriptors\"}");
            continue;
        }
        if (list_own_fds(fds) < 0) {
            for (int i = 0; i < RUN_FDS; i++) {
                close(fds[i]);
            }
            send_text("{\"error\": \"the worker holds too many descriptors\"}");
            continue;
        }
        pid_t pid = fork();
        if (pid == 0) {
            int placeholder[2];
            struct stat mark;
            if (install(fds) < 0 || cover_own_fds(placeholder, &mark) < 0 || setsid() < 0) {
                _exit(127);
            }
            if (uv_loop_fork(loop) != 0) {
                _exit(127);
            }
            close_placeholders(placeholder, &mark);
            napi_value text;
            napi_create_string_utf8(env, request, (size_t)n, &text);
            return text;
        }
        /* The next run is a copy of this memory: nothing of this run stays in it. */
        explicit_bzero(request, (size_t)n);
        for (int i = 0; i < RUN_FDS; i++) {
            close(fds[i]);
        }
        char reply[160];
        if (pid < 0) {
            snprintf(reply, sizeof reply, "{\"error\": \"fork: %s\"}", strerror(errno));
            send_text(reply);
            continue;
        }
        snprintf(reply, sizeof reply, "{\"pid\": %d}", (int)pid);
        send_text(reply);
        int status = 0;
        struct rusage usage;
        memset(&usage, 0, sizeof usage);
        while (wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
        }
        uint64_t cpu_ns = (uint64_t)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000000u +
                          (uint64_t)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1000u;
        snprintf(reply, sizeof reply, "{\"exit\": %d, \"cpu_ns\": %llu, \"maxrss\": %llu}", status,
                 (unsigned long long)cpu_ns, (unsigned long long)usage.ru_maxrss * 1024u);
        send_text(reply);
    }
}

/* setrlimit(resource, soft, hard): limits at or above 2^64 - 1 mean unlimited. */
static napi_value set_rlimit(napi_env env, napi_callback_info info) {
    size_t argc = 3;
    napi_value argv[3];
    double values[3];
    if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != 0 || argc != 3) {
        napi_throw_error(env, NULL, "setrlimit(resource, soft, hard)");
        return NULL;
    }
    for (int i = 0; i < 3; i++) {
        if (napi_get_value_double(env, argv[i], &values[i]) != 0 || values[i] < 0) {
            napi_throw_error(env, NULL, "setrlimit takes non-negative numbers");
            return NULL;
        }
    }
    struct rlimit limit;
    limit.rlim_cur = values[1] >= 18446744073709551615.0 ? RLIM_INFINITY : (rlim_t)values[1];
    limit.rlim_max = values[2] >= 18446744073709551615.0 ? RLIM_INFINITY : (rlim_t)values[2];
    if (setrlimit((int)values[0], &limit) < 0) {
        return throw_errno(env, "setrlimit");
    }
    return NULL;
}

/* become(uid, gid): the child takes the run's uid and gid and drops every capability (a change
 * between two non-root uids keeps them otherwise), then checks that all of it applied. */
static napi_value become(napi_env env, napi_callback_info info) {
    size_t argc = 2;
    napi_value argv[2];
    double ids[2];
    if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != 0 || argc != 2 ||
        napi_get_value_double(env, argv[0], &ids[0]) != 0 ||
        napi_get_value_double(env, argv[1], &ids[1]) != 0 || ids[0] < 0 || ids[1] < 0) {
        napi_throw_error(env, NULL, "become(uid, gid)");
        return NULL;
    }
    uid_t uid = (uid_t)ids[0];
    gid_t gid = (gid_t)ids[1];
    if (getgroups(0, NULL) > 0 && setgroups(0, NULL) < 0) {
        return throw_errno(env, "setgroups");
    }
    if (setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
        return throw_errno(env, "taking the run's uid and gid");
    }
    struct {
        uint32_t version;
        int pid;
    } header = {0x20080522, 0};
    struct {
        uint32_t effective, permitted, inheritable;
    } caps[2];
    memset(caps, 0, sizeof caps);
    if (syscall(SYS_capset, &header, caps) < 0) {
        return throw_errno(env, "dropping the worker's capabilities");
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    uid_t r, e, s;
    gid_t rg, eg, sg;
    if (syscall(SYS_capget, &header, caps) < 0 || caps[0].effective || caps[0].permitted ||
        caps[0].inheritable || caps[1].effective || caps[1].permitted || caps[1].inheritable ||
        getresuid(&r, &e, &s) < 0 || r != uid || e != uid || s != uid ||
        getresgid(&rg, &eg, &sg) < 0 || rg != gid || eg != gid || sg != gid) {
        napi_throw_error(env, NULL, "the run's uid, gid or capabilities did not apply");
        return NULL;
    }
    return NULL;
}

/* enter(path): chdir(path), refusing a symlink anywhere on the way (a run may have planted one). */
static napi_value enter(napi_env env, napi_callback_info info) {
    size_t argc = 1;
    napi_value argv[1];
    char path[4096];
    size_t len = 0;
    if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != 0 || argc != 1 ||
        napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != 0 ||
        len + 1 >= sizeof path || strlen(path) != len) {
        napi_throw_error(env, NULL, "enter(path): a path without NUL bytes");
        return NULL;
    }
    struct {
        uint64_t flags, mode, resolve;
    } how = {O_PATH | O_DIRECTORY | O_CLOEXEC, 0, 0x04 /* RESOLVE_NO_SYMLINKS */};
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
    if (fd < 0) {
        char message[4400];
        snprintf(message, sizeof message, "cannot enter directory %s (symlinks are not followed): %s",
                 path, strerror(errno));
        napi_throw_error(env, NULL, message);
        return NULL;
    }
    int entered = fchdir(fd);
    close(fd);
    if (entered < 0) {
        return throw_errno(env, "fchdir");
    }
    return NULL;
}

/* exit(code): ends a child at once, as _exit does. Node's own teardown would join the
 * platform's worker threads, which a forked child does not have. */
static napi_value exit_now(napi_env env, napi_callback_info info) {
    size_t argc = 1;
    napi_value argv[1];
    double code = 0;
    if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == 0 && argc == 1) {
        napi_get_value_double(env, argv[0], &code);
    }
    _exit((int)code & 0xff);
}

/* getpid(): Node keeps the pid it started with in process.pid; a child needs its own. */
static napi_value get_pid(napi_env env, napi_callback_info info) {
    (void)info;
    napi_value pid;
    napi_create_double(env, (double)getpid(), &pid);
    return pid;
}

napi_value napi_register_module_v1(napi_env env, napi_value exports) {
    /* Keep the programs out of this process's memory and descriptors through /proc. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    napi_value fn;
    if (napi_create_function(env, "serve", 5, serve, NULL, &fn) != 0 ||
        napi_set_named_property(env, exports, "serve", fn) != 0 ||
        napi_create_function(env, "setrlimit", 9, set_rlimit, NULL, &fn) != 0 ||
        napi_set_named_property(env, exports, "setrlimit", fn) != 0 ||
        napi_create_function(env, "exit", 4, exit_now, NULL, &fn) != 0 ||
        napi_set_named_property(env, exports, "exit", fn) != 0 ||
        napi_create_function(env, "getpid", 6, get_pid, NULL, &fn) != 0 ||
        napi_set_named_property(env, exports, "getpid", fn) != 0 ||
        napi_create_function(env, "become", 6, become, NULL, &fn) != 0 ||
        napi_set_named_property(env, exports, "become", fn) != 0 ||
        napi_create_function(env, "enter", 5, enter, NULL, &fn) != 0 ||
        napi_set_named_property(env, exports, "enter", fn) != 0) {
        napi_throw_error(env, NULL, "registering the warm worker's functions failed");
        return NULL;
    }
    return exports;
}
