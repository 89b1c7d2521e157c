//! Unit tier (no privileges): the proxy's forwarding scenarios (`ingress_tests::scenarios`)
//! with the agent and the pods on 127.0.0.1.

use ingress_tests::proxy_setup::Setup;

ingress_tests::scenario_tests!(|_test, tag| Some(Setup::local(tag)));
