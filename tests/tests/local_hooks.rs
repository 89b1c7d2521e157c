//! The cgroup hooks for local clients (root; loopback only): the programs loaded and
//! attached to a cgroup this test creates, the L4 maps filled by hand with a service on
//! 127.0.0.1 / 0.0.0.0 whose endpoints are servers on 127.0.0.2 and 127.0.0.3, and a
//! client process (`dial`) in that cgroup: its connects reach the endpoints, bytes
//! intact, and getpeername says what it dialled. A process outside the cgroup is not
//! touched.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use aya::maps::{Array, HashMap};
use ingress::datapath as ebpf;
use ingress_common::l4::{L4Endpoint, L4Frontend, L4Service, MAGLEV_M};
use ingress_common::maps::{L4_ENDPOINTS_MAP, L4_MAGLEV_MAP, L4_SERVICES_MAP};
use ingress_common::proto;
use ingress_tests::cgroup::{Dialled, TestCgroup, run_dial};
use ingress_tests::pattern::{Fnv, bytes};
use ingress_tests::tcp_echo::Server;

fn dial_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dial"))
}

fn be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// Service 0 on `frontends` (TCP `port`) with `endpoints` spread over its Maglev row 0
/// slot by slot (a stand-in for the agent's translation, which has its own tests).
fn program_service(d: &mut ebpf::Dataplane, frontends: &[Ipv4Addr], port: u16, endpoints: &[std::net::SocketAddr]) {
    {
        let mut eps: HashMap<_, u32, L4Endpoint> =
            HashMap::try_from(d.ebpf.map_mut(L4_ENDPOINTS_MAP).expect("endpoints map")).unwrap();
        for (i, e) in endpoints.iter().enumerate() {
            let std::net::SocketAddr::V4(v4) = e else { panic!("IPv4 endpoints") };
            eps.insert(i as u32 + 1, L4Endpoint { addr: be(*v4.ip()), port: v4.port().to_be(), _pad: 0 }, 0).unwrap();
        }
    }
    {
        let mut table: Array<_, u32> = Array::try_from(d.ebpf.map_mut(L4_MAGLEV_MAP).expect("maglev map")).unwrap();
        for slot in 0..MAGLEV_M {
            table.set(slot, slot % endpoints.len() as u32 + 1, 0).unwrap();
        }
    }
    let mut svcs: HashMap<_, L4Frontend, L4Service> =
        HashMap::try_from(d.ebpf.map_mut(L4_SERVICES_MAP).expect("services map")).unwrap();
    for fe in frontends {
        let key = L4Frontend { addr: be(*fe), port: port.to_be(), proto: proto::TCP, _pad: 0 };
        svcs.insert(key, L4Service { id: 0, table: 0, endpoints: endpoints.len() as u32, flags: 0 }, 0).unwrap();
    }
}

/// Runs `dial ADDR SEND` (in `cgroup`, if given) and parses what it printed.
fn dial(cgroup: Option<&TestCgroup>, addr: &str, send: usize) -> Dialled {
    let mut cmd = Command::new(dial_bin());
    cmd.arg(addr).arg(send.to_string());
    run_dial(cmd, cgroup)
}

fn expected(name: &str, send: usize) -> (usize, u64) {
    let mut reply = format!("{name}\n").into_bytes();
    reply.extend(bytes(7, send));
    (reply.len(), Fnv::of(&reply))
}

#[test]
fn a_local_client_in_the_cgroup_reaches_the_endpoints_and_sees_what_it_dialled() {
    let test = "a_local_client_in_the_cgroup_reaches_the_endpoints_and_sees_what_it_dialled";
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return;
    }
    let a = Server::start_here("127.0.0.2:0", "endpoint-a");
    let b = Server::start_here("127.0.0.3:0", "endpoint-b");
    // a port nothing listens on at 127.0.0.1: only the hook can make a connect succeed
    let frontend = ingress_tests::RefusedPort::new();
    let port = frontend.addr.port();
    let cg = TestCgroup::create(&format!("ingress-test-local-{}", std::process::id())).expect("test cgroup");
    let mut d = ebpf::load().expect("load programs");
    program_service(&mut d, &[Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED], port, &[a.addr, b.addr]);
    d.attach_cgroup_hooks(cg.path()).expect("attach the hooks to the test cgroup");

    // outside the cgroup: untouched, refused
    let outside = dial(None, &format!("127.0.0.1:{port}"), 0);
    assert!(outside.out.contains("error="), "a process outside the cgroup is not rewritten: {}", outside.out);

    let mut served = std::collections::BTreeMap::<String, usize>::new();
    for (i, dialled) in [
        format!("127.0.0.1:{port}"),
        format!("0.0.0.0:{port}"),
        format!("[::1]:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
    ]
    .iter()
    .cycle()
    .take(24)
    .enumerate()
    {
        let send = 1000 + i * 4099;
        let r = dial(Some(&cg), dialled, send);
        let name = if r.got > 0 && expected("endpoint-a", send) == (r.got, r.fnv) {
            "endpoint-a"
        } else if expected("endpoint-b", send) == (r.got, r.fnv) {
            "endpoint-b"
        } else {
            panic!("{dialled}: the reply is not an endpoint's echo of {send} bytes: {}", r.out);
        };
        *served.entry(name.into()).or_default() += 1;
        // getpeername gives back the address dialled (0.0.0.0 and :: as dialled too)
        let want_peer = dialled.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(r.peer.parse::<std::net::SocketAddr>().ok(), Some(want_peer), "{dialled}: {}", r.out);
    }
    assert_eq!(served.values().sum::<usize>(), 24);
    assert!(served.len() == 2, "both endpoints are used: {served:?}");
    assert_eq!(a.connections() + b.connections(), 24, "every connection reached an endpoint, none other");
    drop(d);
    // detached with the programs: the cgroup's processes are not rewritten any more
    let after = dial(Some(&cg), &format!("127.0.0.1:{port}"), 0);
    assert!(after.out.contains("error="), "hooks gone with the agent's handle: {}", after.out);
}
