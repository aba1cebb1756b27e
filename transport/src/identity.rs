//! Client identities: the name a server gives a connected client (from its IP address with
//! [`crate::tcp`], from its certificate's CN with [`crate::tls`]). A receiver places the
//! client's datasets below `root_fs/<identity>`, so an identity must be one dataset-name
//! component: it can never name a path outside that place.

use zferry_core::name::{Component, NameError};

/// A validated client identity.
pub type ClientIdentity = Component;

/// Parses a client identity; the error names the rule it broke.
pub fn parse_client_identity(s: &str) -> Result<ClientIdentity, NameError> {
    Component::parse_as("client identity", s)
}
