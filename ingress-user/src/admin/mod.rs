//! The admin endpoint: [`server`] (`/stats`, `/metrics`, `/routes`, `/readyz`) and
//! [`client`], which the CLI's `ingress stats` and `ingress routes` use.

pub mod client;
pub mod server;
pub mod view;

pub use server::Admin;
pub use view::{RoutesView, format_routes};
