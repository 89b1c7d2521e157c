//! Network-namespace tier (root): the proxy's forwarding scenarios
//! (`ingress_tests::scenarios`) in the k3d-shaped topology: client namespace -> the
//! VM's NIC with XDP -> the agent -> pod IPs behind the node.

use ingress_tests::proxy_setup::Setup;

ingress_tests::scenario_tests!(|test, tag| Setup::in_topology(test, &format!("ingt-{tag}"), &[]));
