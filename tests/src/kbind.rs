//! Delayed binding driven by the agent (`--bind-in-kernel on`, issue 14), the netns tier's
//! shared pieces (tests/tests/netns_kernel_bind.rs, netns_kernel_bind_faults.rs): the
//! standard topology with the OpenChoreo fixtures and an agent that binds, the client
//! side's XDP program a veth needs for the cookie SYN-ACK, a bounded wait until hosts are
//! bound, and keep-alive exchanges checked byte for byte (downloads compared with the
//! seeded pattern, uploads by the hash the pod reports). Every socket has a timeout.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ingress::telemetry::bind::BindView;

use crate::agent::{Agent, ingress_bin};
use crate::backend::Echo;
use crate::client::{Request, read_into, read_response};
use crate::fixtures::{openchoreo_dir, openchoreo_listens, openchoreo_pods};
use crate::netns::in_ns;
use crate::pattern::{Expect, Fnv, bytes, fill, first_difference};
use crate::pinned::PinDir;
use crate::topology::{Topology, VM_IP, VM_NIC};

/// Eligible on the fixtures: one backendRef, no filters, an exact hostname.
pub const BOUND_HOST: &str = "react-starter-development.openchoreovm-apis.localhost:9080";
/// The name prefix of the pods that serve [`BOUND_HOST`].
pub const BOUND_POD: &str = "react-starter-development";
pub const IO_LIMIT: Duration = Duration::from_secs(20);
pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;

pub const BIND_ARGS: [&str; 6] = ["--interface", VM_NIC, "--forwarded-headers", "off", "--bind-in-kernel", "on"];

/// A connection to the VM's 9080 (from the calling thread's namespace), with
/// [`IO_LIMIT`] on every read and write: the writer and a buffered reader.
pub fn connect() -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect_timeout(&format!("{VM_IP}:9080").parse().unwrap(), IO_LIMIT).expect("connect");
    s.set_read_timeout(Some(IO_LIMIT)).unwrap();
    s.set_write_timeout(Some(IO_LIMIT)).unwrap();
    (s.try_clone().unwrap(), BufReader::new(s))
}

/// One keep-alive connection to `host`: for each size a seeded download checked byte
/// for byte and a seeded upload whose hash the pod reports; returns the pods that answered.
pub fn keepalive(host: &str, seed: u64, sizes: &[usize]) -> Vec<String> {
    let (mut w, mut r) = connect();
    exchange(&mut w, &mut r, host, seed, sizes)
}

/// [`keepalive`]'s requests on a connection already open.
pub fn exchange(
    w: &mut TcpStream,
    r: &mut BufReader<TcpStream>,
    host: &str,
    seed: u64,
    sizes: &[usize],
) -> Vec<String> {
    let mut pods = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        let dl = seed * 1000 + i as u64 * 2;
        let get = Request::get(host, "/download")
            .header("x-echo-bytes", &n.to_string())
            .header("x-echo-pattern", &dl.to_string());
        w.write_all(&get.to_bytes()).unwrap();
        check_download(r, dl, *n);
        let mut post = Request::get(host, "/upload").method("POST");
        post.body = bytes(dl + 1, *n);
        w.write_all(&post.to_bytes()).unwrap();
        pods.push(check_upload(r, &post.body, dl + 1));
    }
    pods
}

/// Reads the answer to a `/download` of `n` bytes of pattern `seed` and checks it byte for byte.
pub fn check_download(r: &mut BufReader<TcpStream>, seed: u64, n: usize) {
    let resp = read_response(r, false).expect("download answer");
    assert_eq!((resp.status, resp.body.len()), (200, n), "download {seed} of {n} bytes");
    assert_eq!(first_difference(seed, &resp.body), None, "download {seed} differs");
}

/// Reads the answer to an upload of `body` and checks the length and hash the pod saw;
/// returns the pod.
pub fn check_upload(r: &mut BufReader<TcpStream>, body: &[u8], seed: u64) -> String {
    let echo: Echo = read_response(r, false).expect("upload answer").json();
    assert_eq!((echo.body_len, echo.body_hash), (body.len(), Fnv::of(body)), "upload {seed} of {} bytes", body.len());
    echo.pod
}

/// A `/download` of `n` bytes of pattern `seed` on an open connection, compared byte for
/// byte as it arrives and kept nowhere (sizes up to gibibytes).
pub fn download_streamed(w: &mut TcpStream, r: &mut BufReader<TcpStream>, host: &str, seed: u64, n: u64) {
    let get = Request::get(host, "/download")
        .header("x-echo-bytes", &n.to_string())
        .header("x-echo-pattern", &seed.to_string());
    w.write_all(&get.to_bytes()).unwrap();
    let mut want = Expect::new(seed);
    let (status, got) = read_into(r, &mut want).unwrap_or_else(|e| panic!("download {seed} of {n} bytes: {e}"));
    assert_eq!((status, got), (200, n), "download {seed} of {n} bytes");
    assert_eq!(want.first_difference, None, "download {seed}: the first byte that differs");
}

/// An upload of `n` bytes of pattern `seed` on an open connection, generated and hashed
/// as it is written; checks the length and hash the pod saw and returns the pod.
pub fn upload_streamed(w: &mut TcpStream, r: &mut BufReader<TcpStream>, host: &str, seed: u64, n: u64) -> String {
    // the head alone (no body of its own: `to_bytes` adds no Content-Length)
    let head = Request::get(host, "/upload").method("POST").header("content-length", &n.to_string());
    w.write_all(&head.to_bytes()).unwrap();
    let (mut block, mut hash, mut at) = (vec![0u8; 256 * KIB], Fnv::default(), 0u64);
    while at < n {
        let k = (n - at).min(block.len() as u64) as usize;
        fill(seed, at, &mut block[..k]);
        hash.update(&block[..k]);
        w.write_all(&block[..k]).unwrap_or_else(|e| panic!("upload {seed}: write at {at} of {n}: {e}"));
        at += k as u64;
    }
    let echo: Echo = read_response(r, false).expect("upload answer").json();
    assert_eq!((echo.body_len as u64, echo.body_hash), (n, hash.0), "upload {seed} of {n} bytes");
    echo.pod
}

/// A plain GET on its own connection: (status, pod).
pub fn get(host: &str, path: &str) -> (u16, String) {
    let (mut w, mut r) = connect();
    w.write_all(&Request::get(host, path).to_bytes()).unwrap();
    let resp = read_response(&mut r, false).expect("answer");
    let pod = if resp.status == 200 { resp.json::<Echo>().pod } else { String::new() };
    (resp.status, pod)
}

pub fn bind_view(a: &Agent) -> BindView {
    a.stats().bind.expect("/stats has the kernel binding block with --bind-in-kernel on")
}

/// Waits (bounded) until the agent has bound hosts and the cookie answers port 9080.
pub fn wait_bound(a: &Agent) -> BindView {
    let start = Instant::now();
    loop {
        let v = bind_view(a);
        if v.hosts > 0 && v.targets.iter().any(|t| t == &format!("{VM_IP}:9080")) && v.attached.len() >= 3 {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "nothing bound after 10 s: {v:?}\n{}", a.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Why this kernel cannot bind, or None when it can (`bpf_sk_assign_tcp_reqsk`, Linux
/// 6.11+ with BTF).
pub fn unsupported() -> Option<&'static str> {
    match ingress::datapath::kfunc::kernel_has_functions(ingress_common::maps::POD_BIND_NEEDS) {
        Some(v) if v.iter().all(|b| *b) => None,
        _ => Some("this kernel lacks bpf_sk_assign_tcp_reqsk (Linux 6.11+ with BTF)"),
    }
}

/// Root, the eBPF object and a kernel with `bpf_sk_assign_tcp_reqsk`, else a printed skip.
pub fn require(test: &str) -> bool {
    crate::require_root(test)
        && crate::require_ebpf_object(test)
        && match unsupported() {
            None => true,
            Some(why) => {
                crate::skip(test, why);
                false
            }
        }
}

/// Attached links of the binding programs anywhere on the machine (the root lock keeps other
/// tests' namespaces away while this runs).
pub fn binding_links() -> Vec<String> {
    use ingress_common::maps::{BIND_FIRST_PROGRAM, L4_REPLY_PROGRAM, POD_BIND_PROGRAM};
    ingress::datapath::bpf_links::links_of(&[BIND_FIRST_PROGRAM, POD_BIND_PROGRAM, L4_REPLY_PROGRAM])
        .expect("listing links")
        .into_iter()
        // a detached link stays an object while the agent holds it, on no interface (0)
        .filter(|(_, f, _)| f.ifindex != Some(0))
        .map(|(_, f, name)| format!("{name} link {} ({})", f.id, f.kind()))
        .collect()
}

/// A veth property, not the agent's: a frame sent back with XDP_TX by a driver-mode XDP
/// program on a veth (the cookie SYN-ACK) is dropped unless the peer's receive side runs
/// NAPI, which it does only with an XDP program of its own (or GRO, which needs ethtool).
/// So the client's end gets one that passes everything: `syncookie_xdp` with no
/// targets. A VM's real NIC (virtio-net, ...) needs nothing of the kind, nor does the
/// agent's XDP on a veth since it attaches in generic mode there (its XDP_TX goes out
/// through the stack); and a driver-mode program caps the peer's MTU (at about 3.5 KB:
/// `veth_xdp_set` sets the peer's max_mtu), so MTU tests go without it.
pub fn xdp_on_the_client_side(topo: &Topology) -> ingress::datapath::Dataplane {
    client_side_xdp(&topo.client_ns())
}

/// [`xdp_on_the_client_side`] on `eth0` of namespace `client_ns` (the benchmark's client);
/// the program stays attached while the returned object lives.
pub fn client_side_xdp(client_ns: &str) -> ingress::datapath::Dataplane {
    use aya::programs::{Xdp, XdpMode};
    let mut d = ingress::datapath::load().expect("the object");
    d.syncookie_program_fd().expect("syncookie_xdp loads");
    in_ns(client_ns, || {
        let x: &mut Xdp = d.ebpf.program_mut(ingress_common::maps::SYNCOOKIE_PROGRAM).unwrap().try_into().unwrap();
        x.attach("eth0", XdpMode::Driver).expect("a pass-through XDP program on the client's veth end");
    });
    d
}

/// The standard topology under `prefix`, with the VM forwarding IPv4 (Docker sets this on
/// a k3d VM; bound connections are forwarded to the pods), the client side's XDP program
/// and an agent with `--bind-in-kernel on` (bound in this order, they drop agent first).
pub fn bound_topology(prefix: &str) -> (Topology, ingress::datapath::Dataplane, Agent) {
    let (topo, peer, a) = bound_topology_with(prefix, &openchoreo_dir(), true, |_| {});
    (topo, peer.expect("asked for"), a)
}

/// [`bound_topology`] with the routes of `manifests`, the client side's XDP program only
/// if `peer_xdp`, and `prepare` run on the topology before the agent starts (the agent
/// reads interface MTUs when it attaches).
pub fn bound_topology_with(
    prefix: &str,
    manifests: &Path,
    peer_xdp: bool,
    prepare: impl FnOnce(&Topology),
) -> (Topology, Option<ingress::datapath::Dataplane>, Agent) {
    let topo = Topology::create(prefix, &openchoreo_pods());
    crate::netns::sysctl(&topo.vm_ns(), "net/ipv4/ip_forward", "1");
    prepare(&topo);
    let peer = peer_xdp.then(|| xdp_on_the_client_side(&topo));
    let a = Agent::start(&ingress_bin(), &topo.vm_ns(), manifests, &openchoreo_listens(VM_IP), &BIND_ARGS);
    (topo, peer, a)
}

/// The agent with `--bind-in-kernel on` and its pins under `pins`, entered with `nsenter
/// --net` so the pins outlive it (a restart adopts them).
pub fn start_pinned(topo: &Topology, pins: &PinDir) -> Agent {
    let mut args = BIND_ARGS.to_vec();
    let dir = pins.arg();
    args.extend(["--pin-path", &dir]);
    Agent::start_keeping_pins(&ingress_bin(), &topo.vm_ns(), &openchoreo_dir(), &openchoreo_listens(VM_IP), &args)
}
