//! Packet tier for kfunc calls from our eBPF object (aya 0.14 cannot relocate them;
//! ingress-user/src/datapath/kfunc.rs resolves them before aya loads the object): the
//! `kfunc_probe` tc program calls `bpf_dynptr_from_skb`, loads, passes the verifier and
//! runs under BPF_PROG_TEST_RUN. A control loads the same object with the call left
//! unresolved (`r0 = -EOPNOTSUPP`): the program's verdict follows the kfunc's result.

use ingress::datapath as ebpf;
use ingress::datapath::kfunc;
use ingress_common::maps::{KFUNC_PROBE_NEEDS, KFUNC_PROBE_PROGRAM, KFUNC_PROBE_SINCE};
use ingress_tests::packet::{ACK, PSH, Packet, test_run};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

/// Root, the object, and a kernel whose BTF has every kfunc in `needs`.
fn require(test: &str, needs: &[&str]) -> bool {
    if !ingress_tests::require_root(test) || !ingress_tests::require_ebpf_object(test) {
        return false;
    }
    match kfunc::kernel_has_functions(needs) {
        Some(v) if v.iter().all(|b| *b) => true,
        Some(_) => {
            ingress_tests::skip(
                test,
                &format!("this kernel's BTF lacks one of {needs:?} (Linux {KFUNC_PROBE_SINCE}+)"),
            );
            false
        }
        None => {
            ingress_tests::skip(test, "no /sys/kernel/btf/vmlinux: kfunc calls need a kernel with BTF");
            false
        }
    }
}

fn data_segment() -> Vec<u8> {
    Packet::tcp("198.18.0.1", 40000, "10.42.0.7", 8080, ACK | PSH).payload(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").build()
}

#[test]
fn a_kfunc_call_loads_passes_the_verifier_and_runs() {
    let test = "a_kfunc_call_loads_passes_the_verifier_and_runs";
    if !require(test, KFUNC_PROBE_NEEDS) {
        return;
    }
    let mut d = ebpf::load().unwrap_or_else(|e| panic!("{test}: {e}"));
    // the call was found and resolved to the kernel's own BTF id of the function
    let btf = kfunc::vmlinux_resolver().expect("vmlinux BTF");
    let want = kfunc::func_id(&btf, "bpf_dynptr_from_skb").expect("bpf_dynptr_from_skb in vmlinux BTF");
    let call = d.kfuncs.iter().find(|c| c.name == "bpf_dynptr_from_skb").expect("the probe's call was found");
    assert_eq!(call.btf_id, Some(want), "{call:?}");
    let fd = d
        .kfunc_tc_program_fd(KFUNC_PROBE_PROGRAM, KFUNC_PROBE_NEEDS, KFUNC_PROBE_SINCE)
        .unwrap_or_else(|e| panic!("{test}: verifier: {e}"));
    let insns = d.verified_insns(KFUNC_PROBE_PROGRAM).expect("verified_insns");
    println!("{KFUNC_PROBE_PROGRAM}: verifier processed {insns} instructions");
    assert!(insns > 0);
    let r = test_run(fd, &data_segment(), 1).expect("BPF_PROG_TEST_RUN");
    assert_eq!(r.retval, TC_ACT_OK, "bpf_dynptr_from_skb returned an error");
}

#[test]
fn an_unresolved_kfunc_call_still_loads_and_the_program_sees_the_error() {
    let test = "an_unresolved_kfunc_call_still_loads_and_the_program_sees_the_error";
    if !require(test, KFUNC_PROBE_NEEDS) {
        return;
    }
    // as on a kernel without the function: every kfunc call becomes r0 = -EOPNOTSUPP
    let object = ebpf::OBJECT.expect("object");
    let patched = kfunc::patch(object, &mut |_| None).expect("patch");
    assert!(patched.missing().contains(&"bpf_dynptr_from_skb"), "{:?}", patched.calls);
    let mut d =
        ebpf::load_from(&patched.object).unwrap_or_else(|e| panic!("{test}: the rest of the object loads: {e}"));
    // the loader reports what the kernel lacks, and the agent refuses the program by name
    assert!(d.kfuncs.iter().any(|c| c.name == "bpf_dynptr_from_skb" && c.btf_id.is_none()), "{:?}", d.kfuncs);
    let e = d.kfunc_tc_program_fd(KFUNC_PROBE_PROGRAM, KFUNC_PROBE_NEEDS, KFUNC_PROBE_SINCE).unwrap_err().to_string();
    assert!(e.contains("kfunc_probe") && e.contains("bpf_dynptr_from_skb") && e.contains("6.4"), "{e}");
    // loaded anyway, the replaced call passes the verifier and yields -EOPNOTSUPP
    let fd = d.tc_program_fd(KFUNC_PROBE_PROGRAM).unwrap_or_else(|e| panic!("{test}: verifier: {e}"));
    let r = test_run(fd, &data_segment(), 1).expect("BPF_PROG_TEST_RUN");
    assert_eq!(r.retval, TC_ACT_SHOT, "the program's verdict follows the (replaced) call's result");
}

#[test]
fn the_pod_side_bind_program_passes_the_verifier_and_passes_what_is_not_admitted() {
    use ingress_common::maps::{POD_BIND_NEEDS, POD_BIND_PROGRAM, POD_BIND_SINCE};
    let test = "the_pod_side_bind_program_passes_the_verifier_and_passes_what_is_not_admitted";
    if !require(test, POD_BIND_NEEDS) {
        return;
    }
    let mut d = ebpf::load().unwrap_or_else(|e| panic!("{test}: {e}"));
    let call = d.kfuncs.iter().find(|c| c.name == "bpf_sk_assign_tcp_reqsk").expect("the kfunc call was found");
    assert!(call.btf_id.is_some(), "{call:?}");
    let fd = d
        .kfunc_tc_program_fd(POD_BIND_PROGRAM, POD_BIND_NEEDS, POD_BIND_SINCE)
        .unwrap_or_else(|e| panic!("{test}: verifier: {e}"));
    let insns = d.verified_insns(POD_BIND_PROGRAM).expect("verified_insns");
    println!("{POD_BIND_PROGRAM}: verifier processed {insns} instructions");
    // nothing admitted (the map is empty): the segment passes untouched
    let pkt = data_segment();
    let r = test_run(fd, &pkt, 1).expect("BPF_PROG_TEST_RUN");
    assert_eq!(r.retval, TC_ACT_OK);
    assert_eq!(r.data_out, pkt, "untouched");
}
