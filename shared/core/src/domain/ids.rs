//! Identifiers, each its own type, so that a build id cannot be passed where a release id is
//! expected. They serialize as the plain strings they wrap, so stored records and wire formats
//! are unchanged.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Read as the string it is (never the other way: a `&str` is no id).
        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id!(
    /// A release: one deploy attempt of an app.
    ReleaseId
);
id!(
    /// A build, as the image builder names it (Cloud Build's build id, or the local builder's).
    BuildId
);
id!(
    /// A webhook on the forge (GitHub's hook id, or the local hook's).
    HookId
);
id!(
    /// A webhook delivery (`X-GitHub-Delivery`): one per event, the same for every hook.
    DeliveryId
);

impl ReleaseId {
    /// A new, unique release id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_stored_as_the_plain_string_it_wraps() {
        let id = ReleaseId::new("r-1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"r-1\"");
        assert_eq!(serde_json::from_str::<ReleaseId>("\"r-1\"").unwrap(), id);
        assert_eq!(id, "r-1");
        assert_eq!(id.to_string(), "r-1");
    }

    #[test]
    fn random_release_ids_differ() {
        assert_ne!(ReleaseId::random(), ReleaseId::random());
    }
}
