//! What a box can reach: host processes, the server's environment, other boxes, the network, and
//! the kernel interfaces that are refused (or kill) in a box.

use super::*;

#[test]
fn a_box_sees_no_host_process_server_environment_or_other_box() {
    attack(async {
        let addr = server().await;
        let mut a = Client::connect(addr).await;
        let mut b = Client::connect(addr).await;
        let sa = a.open(json!({"language": "bash"})).await;
        let sb = b.open(json!({"language": "python"})).await;
        let marker = format!("cb-other-box-{}", std::process::id());
        let exe = std::env::current_exe().expect("test exe");
        let exe_name = exe
            .file_name()
            .and_then(|n| n.to_str())
            .expect("exe name")
            .to_string();
        let secret = secret().to_string();
        let host_canary = baseline().canary_file.display().to_string();
        let probe = format!(
            r#"import os
found = []
pids = [p for p in os.listdir('/proc') if p.isdigit()]
for p in pids:
    for f in ['cmdline', 'environ', 'status', 'comm']:
        try:
            data = open('/proc/%s/%s' % (p, f), 'rb').read().decode('latin-1')
        except OSError:
            continue
        for needle in [{secret:?}, {marker:?}, {exe_name:?}, 'cargo', '{SECRET_VAR}']:
            if needle in data:
                found.append('%s/%s has %s' % (p, f, needle))
for k, v in os.environ.items():
    if {secret:?} in v or k == '{SECRET_VAR}':
        found.append('env ' + k)
for path in [{host_canary:?}, '/proc/1/root/etc/shadow', '/proc/1/environ', '/proc/1/fd/0',
             '/proc/1/cwd', '/etc/shadow', '/etc/ssh', '/root/.ssh', '/root/.bash_history',
             '/root/.cargo', '/root/.pyenv', '/home', '/sys/fs/cgroup', '/run/codebeaker']:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, 'rb').read()
        found.append('readable ' + path)
    except OSError:
        pass
print('pids', len(pids))
print('found', found)
"#
        );
        let sleeper = format!("exec -a {marker} sleep 3");
        let (held, probed) = tokio::join!(a.run(&sa, "bash", &sleeper, RUN_MS), async {
            // The other box's program is running while this box looks.
            wait_for_host_process(&marker).await;
            b.run(&sb, "python", &probe, RUN_MS).await
        });
        assert!(matches!(status(&held), "ok" | "timeout"), "{held}");
        assert_eq!(status(&probed), "ok", "{probed}");
        let stdout = text(&probed["result"]["stdout"]);
        assert!(stdout.contains("found []\n"), "{probed}");
        let pids: usize = stdout
            .lines()
            .find_map(|l| l.strip_prefix("pids "))
            .and_then(|n| n.parse().ok())
            .expect("pid count");
        assert!(
            pids <= 4,
            "only the box's own init, worker and program are visible: {probed}"
        );
        a.close(sa).await;
        b.close(sb).await;
    });
}

// ------------------------------------------------------------------------------------------
// The network.

#[test]
fn network_egress_fails_everywhere() {
    attack(async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("host listener");
        listener.set_nonblocking(true).expect("nonblocking");
        let host_port = listener.local_addr().expect("addr").port();
        let server_port = server().await.port();
        let mut c = Client::connect(server().await).await;
        let s = c.open(json!({"language": "python"})).await;
        let probe = format!(
            r#"import errno, socket
targets = [('tcp', '1.1.1.1', 53), ('tcp', '10.0.0.1', 80), ('tcp', '192.168.0.1', 80),
           ('tcp', '169.254.169.254', 80), ('tcp', '127.0.0.1', {server_port}),
           ('tcp', '127.0.0.1', {host_port}), ('udp', '1.1.1.1', 53), ('udp', '169.254.169.254', 53),
           ('tcp6', '2606:4700:4700::1111', 53)]
for kind, host, port in targets:
    s = socket.socket(socket.AF_INET6 if kind == 'tcp6' else socket.AF_INET,
                      socket.SOCK_DGRAM if kind == 'udp' else socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        if kind == 'udp':
            s.sendto(b'x', (host, port))
        else:
            s.connect((host, port))
        print('REACHED', kind, host, port)
    except OSError as e:
        print('failed', kind, host, port, errno.errorcode.get(e.errno, type(e).__name__))
try:
    print('REACHED dns', socket.getaddrinfo('example.com', 80))
except OSError as e:
    print('failed dns', type(e).__name__)
srv = socket.socket()
srv.bind(('127.0.0.1', 0))
srv.listen()
socket.create_connection(srv.getsockname(), timeout=1)
print('own loopback ok')
"#
        );
        let run = c.run(&s, "python", &probe, RUN_MS).await;
        assert_eq!(status(&run), "ok", "{run}");
        let stdout = text(&run["result"]["stdout"]);
        assert!(!stdout.contains("REACHED"), "{run}");
        assert_eq!(stdout.matches("failed ").count(), 10, "{run}");
        for line in stdout
            .lines()
            .filter(|l| l.starts_with("failed tcp 127.0.0.1"))
        {
            assert!(
                line.ends_with("ECONNREFUSED"),
                "the box's loopback is its own: {line}"
            );
        }
        assert!(stdout.ends_with("own loopback ok\n"), "{run}");
        let run = c
            .run(
                &s,
                "bash",
                &format!("exec 3<>/dev/tcp/1.1.1.1/53 && echo REACHED; exec 3<>/dev/tcp/127.0.0.1/{host_port} && echo REACHED; echo done"),
                RUN_MS,
            )
            .await;
        assert_eq!(text(&run["result"]["stdout"]), "done\n", "{run}");
        assert_eq!(
            listener.accept().map(|_| ()).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock),
            "nothing reached the host's loopback"
        );
        c.close(s).await;
    });
}

// ------------------------------------------------------------------------------------------
// Kernel interfaces.

#[test]
fn dangerous_syscalls_are_refused_and_32_bit_calls_kill() {
    attack(async {
        let mut c = Client::connect(server().await).await;
        let s = c.open(json!({"language": "python"})).await;
        let probe = r#"import ctypes, errno, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(name, nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    print(name, r, errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()) if r == -1 else 'ALLOWED')
call('ptrace', 101, 16, 1, 0, 0)
call('mount', 165, 0, 0, 0, 0, 0)
call('umount2', 166, 0, 0)
call('unshare', 272, 0x10000000)
call('unshare_net', 272, 0x40000000)
call('setns', 308, 0, 0)
call('keyctl', 250, 0, 0, 0, 0)
call('add_key', 248, 0, 0, 0, 0, 0)
call('bpf', 321, 0, 0, 0)
call('io_uring_setup', 425, 1, 0)
call('userfaultfd', 323, 0)
call('perf_event_open', 298, 0, 0, -1, -1, 0)
call('process_vm_readv', 310, 1, 0, 0, 0, 0, 0)
call('kexec_load', 246, 0, 0, 0, 0)
call('init_module', 175, 0, 0, 0)
call('pivot_root', 155, 0, 0)
call('chroot', 161, 0)
call('open_by_handle_at', 304, 0, 0, 0)
call('pidfd_getfd', 438, 0, 0, 0)
call('clone_newns', 56, 0x00020000 | 17, 0, 0, 0, 0)
call('reboot', 169, 0, 0, 0, 0)
call('syslog', 103, 3, 0, 0)
call('fsopen', 430, 0, 0)
call('clone3', 435, 0, 0)
call('x32_getpid', 39 | 0x40000000)
for family, name in [(16, 'netlink'), (17, 'packet'), (40, 'vsock')]:
    try:
        socket.socket(family, socket.SOCK_STREAM if family == 40 else socket.SOCK_RAW, 0)
        print(name, 0, 'ALLOWED')
    except OSError as e:
        print(name, -1, errno.errorcode.get(e.errno))
"#;
        let run = c.run(&s, "python", probe, RUN_MS).await;
        assert_eq!(status(&run), "ok", "{run}");
        let stdout = text(&run["result"]["stdout"]);
        assert_eq!(stdout.lines().count(), 28, "{run}");
        for line in stdout.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let expected = if ["clone3", "x32_getpid"].contains(&parts[0]) {
                "ENOSYS"
            } else {
                "EPERM"
            };
            assert_eq!(parts[1..], ["-1", expected], "{line}");
        }

        // 32-bit system calls: `int 0x80` from machine code in an executable page, and from C.
        let int80_python = "import ctypes, mmap\nbuf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\nbuf.write(bytes([0xb8, 0x14, 0, 0, 0, 0xcd, 0x80, 0xc3]))\nf = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))\nprint('calling', flush=True)\nprint('returned', f(), flush=True)";
        let int80_c = "#include <stdio.h>\nint main(void) {\n    long r;\n    printf(\"calling\\n\");\n    fflush(stdout);\n    __asm__ volatile(\"int $0x80\" : \"=a\"(r) : \"a\"(20L) : \"memory\");\n    printf(\"returned %ld\\n\", r);\n    return 0;\n}";
        for (language, code) in [("python", int80_python), ("c", int80_c)] {
            let run = c.run(&s, language, code, RUN_MS).await;
            assert_eq!(status(&run), "runtime_error", "{language}: {run}");
            assert_eq!(run["result"]["signal"], libc::SIGSYS, "{language}: {run}");
            assert_eq!(
                text(&run["result"]["stdout"]),
                "calling\n",
                "{language}: {run}"
            );
        }
        c.still_works(&s).await;
        c.close(s).await;
    });
}
