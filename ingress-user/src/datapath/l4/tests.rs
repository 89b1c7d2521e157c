use super::*;
use ingress_common::l4::{CT_CLOSED, CT_ESTABLISHED, CT_SYN_SENT, CT_TIMEOUT_CLOSED_NS, CT_TIMEOUT_SYN_NS};

fn ep(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn model(sets: &[(u16, &[&str])]) -> L4Model {
    L4Model {
        services: sets
            .iter()
            .enumerate()
            .map(|(i, (port, eps))| L4ServiceModel {
                id: i as u32,
                port: *port,
                label: format!("{port}"),
                endpoints: {
                    let mut v: Vec<SocketAddrV4> = eps.iter().map(|e| ep(e)).collect();
                    v.sort();
                    v
                },
            })
            .collect(),
        problems: vec![],
    }
}

const VM: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// Applies ops to a plain in-memory copy of the maps, checking at every step that each
/// service's row holds only endpoint ids that exist (what a program may read).
#[derive(Default)]
struct FakeMaps {
    services: BTreeMap<L4Frontend, L4Service>,
    endpoints: BTreeMap<u32, L4Endpoint>,
    rows: BTreeMap<u32, Arc<Vec<u32>>>,
}

impl FakeMaps {
    fn apply(&mut self, ops: &[L4Op]) {
        for op in ops {
            match op {
                L4Op::PutEndpoint(id, e) => {
                    self.endpoints.insert(*id, *e);
                }
                L4Op::PutTable { row, slots } => {
                    assert!(
                        !self.services.values().any(|s| s.table == *row && s.endpoints > 0),
                        "row {row} overwritten while a service uses it: {op:?}"
                    );
                    assert_eq!(slots.len(), MAGLEV_M as usize);
                    self.rows.insert(*row, slots.clone());
                }
                L4Op::PutService(f, s) => {
                    self.services.insert(*f, *s);
                }
                L4Op::DeleteService(f) => {
                    self.services.remove(f);
                }
                L4Op::DeleteEndpoint(id) => {
                    self.endpoints.remove(id);
                }
            }
            self.check_consistent();
        }
    }

    fn check_consistent(&self) {
        for s in self.services.values() {
            if s.endpoints == 0 {
                continue;
            }
            let row = self.rows.get(&s.table).expect("a used row is written");
            for id in row.iter() {
                assert!(self.endpoints.contains_key(id), "slot names endpoint {id} which is not in the map");
            }
        }
    }

    /// The endpoints a service's frontend reaches.
    fn reachable(&self, port: u16) -> BTreeSet<SocketAddrV4> {
        let s = self.services[&frontend(VM, port)];
        if s.endpoints == 0 {
            return BTreeSet::new();
        }
        self.rows[&s.table].iter().map(|id| endpoint_addr(&self.endpoints[id])).collect()
    }
}

#[test]
fn parses_l4_mappings() {
    let m: L4Mapping = "6550=172.18.0.2:6443".parse().unwrap();
    assert_eq!(m, L4Mapping { port: 6550, target: L4Target::Fixed(ep("172.18.0.2:6443")) });
    assert_eq!(m.to_string(), "6550=172.18.0.2:6443");
    let m: L4Mapping = "10082=openchoreo-data-plane/registry:5000".parse().unwrap();
    assert_eq!(
        m.target,
        L4Target::Service { namespace: "openchoreo-data-plane".into(), name: "registry".into(), port: 5000 }
    );
    assert_eq!(m.to_string(), "10082=openchoreo-data-plane/registry:5000");
}

#[test]
fn rejects_bad_l4_mappings_with_reason() {
    for (bad, why) in [
        ("6550", "missing `=`"),
        ("x=1.2.3.4:5", "PORT is not a port number"),
        ("0=1.2.3.4:5", "PORT 0"),
        ("6550=[::1]:6443", "IPv6"),
        ("6550=0.0.0.0:6443", "address and a port"),
        ("6550=1.2.3.4:0", "address and a port"),
        ("6550=svc:80", "neither"),
        ("6550=ns/svc", "missing `:PORT`"),
        ("6550=ns/svc:http", "Service PORT"),
        ("6550=/svc:80", "empty"),
    ] {
        let e = bad.parse::<L4Mapping>().unwrap_err().to_string();
        assert!(e.contains(why), "{bad}: {e}");
        assert!(e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn an_l4_port_that_is_also_an_l7_port_is_refused() {
    let maps: Vec<L4Mapping> =
        ["6550=172.18.0.2:6443", "8080=172.18.0.2:80"].iter().map(|s| s.parse().unwrap()).collect();
    let e = check_mappings(&maps, &[8080, 9080]).unwrap_err();
    assert!(e.contains("8080") && e.contains("L7 listen port"), "{e}");
    assert!(check_mappings(&maps[..1], &[8080]).is_ok());
    let twice: Vec<L4Mapping> = ["6550=1.1.1.1:1", "6550=1.1.1.2:1"].iter().map(|s| s.parse().unwrap()).collect();
    assert!(check_mappings(&twice, &[]).unwrap_err().contains("twice"));
}

#[test]
fn resolve_takes_fixed_targets_and_service_endpoints_and_reports_problems() {
    let maps: Vec<L4Mapping> = ["6550=172.18.0.2:6443", "10082=ns/reg:5000", "10081=ns/missing:80"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let m = resolve(&maps, |ns, name, port| match (ns, name, port) {
        ("ns", "reg", 5000) => Ok(vec![
            "10.42.0.12:5000".parse().unwrap(),
            "10.42.0.11:5000".parse().unwrap(),
            "[fd00::1]:5000".parse().unwrap(),
        ]),
        _ => Err(format!("Service {ns}/{name} not found")),
    });
    assert_eq!(m.services.len(), 3);
    assert_eq!(m.services[0].endpoints, vec![ep("172.18.0.2:6443")]);
    assert_eq!(m.services[1].endpoints, vec![ep("10.42.0.11:5000"), ep("10.42.0.12:5000")], "sorted, IPv4 only");
    assert_eq!((m.services[1].id, m.services[1].port), (1, 10082));
    assert!(m.services[2].endpoints.is_empty());
    assert!(m.problems.iter().any(|p| p.contains("IPv6")), "{:?}", m.problems);
    assert!(m.problems.iter().any(|p| p.contains("ns/missing") && p.contains("not found")), "{:?}", m.problems);
}

#[test]
fn resolve_caps_endpoints_per_service() {
    let maps: Vec<L4Mapping> = vec!["1000=ns/big:80".parse().unwrap()];
    let m = resolve(&maps, |_, _, _| Ok((0..40).map(|i| SocketAddr::from(([10, 42, 0, i as u8 + 1], 80))).collect()));
    assert_eq!(m.services[0].endpoints.len(), MAX_ENDPOINTS_PER_SERVICE as usize);
    assert!(m.problems[0].contains("only the first"));
}

#[test]
fn a_first_plan_writes_endpoints_then_rows_then_services() {
    let m = model(&[(6550, &["172.18.0.2:6443"]), (10082, &["10.42.0.11:5000", "10.42.0.12:5000"])]);
    let (ops, next) = plan(&Programmed::default(), &m, &[VM, Ipv4Addr::new(10, 0, 0, 5)]);
    let kind = |o: &L4Op| match o {
        L4Op::PutEndpoint(..) => 0,
        L4Op::PutTable { .. } => 1,
        L4Op::PutService(..) => 2,
        L4Op::DeleteService(..) => 3,
        L4Op::DeleteEndpoint(..) => 4,
    };
    let kinds: Vec<u8> = ops.iter().map(kind).collect();
    assert!(kinds.windows(2).all(|w| w[0] <= w[1]), "ordered: {kinds:?}");
    assert_eq!(kinds.iter().filter(|&&k| k == 0).count(), 3);
    assert_eq!(kinds.iter().filter(|&&k| k == 1).count(), 2);
    assert_eq!(kinds.iter().filter(|&&k| k == 2).count(), 4, "two ports on two addresses");
    // ids start at 1 (0 means "no endpoint" in a slot)
    assert!(next.endpoints.values().all(|&id| id >= 1));
    let mut maps = FakeMaps::default();
    maps.apply(&ops);
    assert_eq!(maps.reachable(10082), [ep("10.42.0.11:5000"), ep("10.42.0.12:5000")].into());
    let fe = frontend(VM, 10082);
    assert_eq!(maps.services[&fe], L4Service { id: 1, table: 2, endpoints: 2, flags: 0 });
    // network byte order in the keys
    assert_eq!(fe.port, 10082u16.to_be());
    assert_eq!(fe.addr.to_ne_bytes(), [198, 18, 0, 2]);
    // the same model again: nothing to do
    let (again, same) = plan(&next, &m, &[VM, Ipv4Addr::new(10, 0, 0, 5)]);
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(same, next);
}

#[test]
fn an_endpoint_change_fills_the_other_row_then_switches_then_deletes() {
    let frontends = [VM];
    let m1 = model(&[(10082, &["10.42.0.11:5000", "10.42.0.12:5000"])]);
    let (ops1, p1) = plan(&Programmed::default(), &m1, &frontends);
    let mut maps = FakeMaps::default();
    maps.apply(&ops1);
    let id_11 = p1.endpoints[&ep("10.42.0.11:5000")];
    // .12 leaves, .13 arrives
    let m2 = model(&[(10082, &["10.42.0.11:5000", "10.42.0.13:5000"])]);
    let (ops2, p2) = plan(&p1, &m2, &frontends);
    maps.apply(&ops2); // FakeMaps asserts the row in use is never overwritten
    assert_eq!(maps.reachable(10082), [ep("10.42.0.11:5000"), ep("10.42.0.13:5000")].into());
    assert_eq!(p2.endpoints[&ep("10.42.0.11:5000")], id_11, "an endpoint that stays keeps its id");
    assert_eq!(maps.services[&frontend(VM, 10082)].table, 1, "switched to the other row");
    assert!(matches!(ops2.last(), Some(L4Op::DeleteEndpoint(_))), "{ops2:?}");
    assert_eq!(maps.endpoints.len(), 2, "the endpoint that left is deleted");
    // and back: the first row is reused
    let (ops3, _) = plan(&p2, &m1, &frontends);
    maps.apply(&ops3);
    assert_eq!(maps.services[&frontend(VM, 10082)].table, 0);
    assert_eq!(maps.reachable(10082), [ep("10.42.0.11:5000"), ep("10.42.0.12:5000")].into());
}

#[test]
fn minimal_disruption_through_the_diff() {
    let all: Vec<String> = (1..=5).map(|i| format!("10.42.0.{i}:80")).collect();
    let refs: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
    let (ops1, p1) = plan(&Programmed::default(), &model(&[(80, &refs)]), &[VM]);
    let (ops2, _) = plan(&p1, &model(&[(80, &refs[..4])]), &[VM]);
    let row = |ops: &[L4Op]| {
        ops.iter()
            .find_map(|o| match o {
                L4Op::PutTable { slots, .. } => Some(slots.clone()),
                _ => None,
            })
            .unwrap()
    };
    let (before, after) = (row(&ops1), row(&ops2));
    let gone = p1.endpoints[&ep("10.42.0.5:80")];
    let moved = before.iter().zip(after.iter()).filter(|(b, a)| **b != gone && b != a).count();
    assert!(moved < (MAGLEV_M as usize) / 20, "{moved} slots of staying endpoints moved");
}

#[test]
fn a_service_that_goes_away_is_deleted_after_the_others_are_written() {
    let (ops1, p1) = plan(&Programmed::default(), &model(&[(1, &["10.0.0.1:1"]), (2, &["10.0.0.2:2"])]), &[VM]);
    let mut maps = FakeMaps::default();
    maps.apply(&ops1);
    let only_first = L4Model { services: vec![model(&[(1, &["10.0.0.1:1"])]).services.remove(0)], problems: vec![] };
    let (ops2, p2) = plan(&p1, &only_first, &[VM]);
    assert_eq!(ops2, vec![L4Op::DeleteService(frontend(VM, 2)), L4Op::DeleteEndpoint(p1.endpoints[&ep("10.0.0.2:2")])]);
    maps.apply(&ops2);
    assert_eq!(p2.services.len(), 1);
}

#[test]
fn a_service_without_endpoints_is_programmed_with_zero_endpoints() {
    let (ops, _) = plan(&Programmed::default(), &model(&[(7, &[])]), &[VM]);
    assert_eq!(ops, vec![L4Op::PutService(frontend(VM, 7), L4Service { id: 0, table: 0, endpoints: 0, flags: 0 })]);
}

fn ct(src: u32, dst: u32, sp: u16, dp: u16, dir: u8) -> L4CtKey {
    L4CtKey { src_addr: src, dst_addr: dst, src_port: sp, dst_port: dp, proto: proto::TCP, dir, _pad: 0 }
}

#[test]
fn sweep_removes_expired_flows_and_orphaned_replies() {
    let (client, vm, pod) = (1u32, 2u32, 3u32);
    let live_o = ct(client, vm, 1000, 80, CT_DIR_ORIG);
    let live_r = ct(pod, client, 8080, 1000, CT_DIR_REPLY);
    let old_o = ct(client, vm, 1001, 80, CT_DIR_ORIG);
    let old_r = ct(pod, client, 8080, 1001, CT_DIR_REPLY);
    let orphan_r = ct(pod, client, 8080, 1002, CT_DIR_REPLY);
    let now = 1_000 * 1_000_000_000u64;
    let o = |state, seen| L4CtEntry { nat_addr: pod, nat_port: 8080, state, last_seen_ns: seen, ..Default::default() };
    let r = |seen| L4CtEntry { nat_addr: vm, nat_port: 80, last_seen_ns: seen, ..Default::default() };
    let entries = vec![
        (live_o, o(CT_ESTABLISHED, now - 100 * 1_000_000_000)),
        (live_r, r(now)),
        (old_o, o(CT_SYN_SENT, now - CT_TIMEOUT_SYN_NS - 1)),
        (old_r, r(now)),
        (orphan_r, r(now)),
    ];
    let mut gone = sweep(&entries, now);
    gone.sort();
    let mut want = vec![old_o, old_r, orphan_r];
    want.sort();
    assert_eq!(gone, want);
    assert_eq!(occupancy(&entries, now), (1, 5));
    // a closed flow outlives its short timeout only while packets come
    let closed = vec![(live_o, o(CT_CLOSED, now - CT_TIMEOUT_CLOSED_NS + 1))];
    assert!(sweep(&closed, now).is_empty());
    assert_eq!(sweep(&closed, now + 2), vec![live_o]);
}

#[test]
fn routes_pick_the_longest_prefix() {
    let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                eth0\t00000000\t010012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                eth0\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                br-k3d\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                br-k3d\t00002A0A\t020012AC\t0003\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                down0\t0000000B\t00000000\t0000\t0\t0\t0\t000000FF\t0\t0\t0\n";
    let routes = parse_proc_routes(text);
    assert_eq!(routes.len(), 4, "the route that is not up is skipped");
    assert_eq!(route_iface(&routes, Ipv4Addr::new(10, 42, 0, 7)).as_deref(), Some("br-k3d"));
    assert_eq!(route_iface(&routes, Ipv4Addr::new(172, 18, 0, 2)).as_deref(), Some("br-k3d"));
    assert_eq!(route_iface(&routes, Ipv4Addr::new(198, 18, 0, 1)).as_deref(), Some("eth0"));
    assert_eq!(route_iface(&routes, Ipv4Addr::new(8, 8, 8, 8)).as_deref(), Some("eth0"), "default route");
    assert_eq!(route_iface(&routes[1..], Ipv4Addr::new(8, 8, 8, 8)), None);
    // the next hop: the node for the pods, none on the link
    assert_eq!(route_gateway(&routes, Ipv4Addr::new(10, 42, 0, 7)), Some(Ipv4Addr::new(172, 18, 0, 2)));
    assert_eq!(route_gateway(&routes, Ipv4Addr::new(8, 8, 8, 8)), Some(Ipv4Addr::new(198, 18, 0, 1)));
    assert_eq!(route_gateway(&routes, Ipv4Addr::new(172, 18, 0, 2)), None);
}
