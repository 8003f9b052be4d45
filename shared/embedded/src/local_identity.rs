use async_trait::async_trait;
use http::HeaderMap;
use subtle::ConstantTimeEq;

use runway_core::domain::Caller;
use runway_core::ports::{Identity, IdentityError, bearer_token};

/// The person at the laptop: one configured user, an admin. Stands in for IAP.
#[derive(Clone, Debug)]
pub struct LocalIdentity {
    pub email: String,
}

#[async_trait]
impl Identity for LocalIdentity {
    async fn caller(&self, _headers: &HeaderMap) -> Result<Caller, IdentityError> {
        Ok(Caller {
            email: self.email.clone(),
            admin: true,
        })
    }
}

/// Guards the worker and cleanup endpoints with a bearer token only the local queue and timer
/// know, standing in for the OIDC token Pub/Sub and Cloud Scheduler send on Google Cloud.
#[derive(Clone)]
pub struct PushToken {
    token: String,
    caller: String,
}

impl PushToken {
    pub fn new(token: String, caller: &str) -> Self {
        Self {
            token,
            caller: caller.to_owned(),
        }
    }

    pub fn random(caller: &str) -> Self {
        Self::new(uuid::Uuid::new_v4().simple().to_string(), caller)
    }

    pub fn token(&self) -> &str {
        &self.token
    }
}

#[async_trait]
impl Identity for PushToken {
    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, IdentityError> {
        let presented = bearer_token(headers)
            .ok_or_else(|| IdentityError::Unauthenticated("a bearer token is required".into()))?;
        if bool::from(presented.as_bytes().ct_eq(self.token.as_bytes())) {
            Ok(Caller {
                email: self.caller.clone(),
                admin: true,
            })
        } else {
            Err(IdentityError::Unauthenticated(
                "the bearer token is not valid".into(),
            ))
        }
    }
}
