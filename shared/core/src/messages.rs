//! The messages Runway publishes: deploy requests, and build notifications in the shape of
//! Cloud Build's `cloud-builds` topic (which the local builder publishes too).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::ReleaseId;
use crate::ports::OutboundMessage;

/// The body of a message on `Topic::DeployRequests`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRequest {
    pub release_id: ReleaseId,
    pub app: String,
}

impl DeployRequest {
    pub fn to_message(&self) -> OutboundMessage {
        OutboundMessage {
            data: serde_json::to_vec(self).expect("a deploy request serializes"),
            attributes: BTreeMap::from([
                ("app".to_owned(), self.app.clone()),
                ("releaseId".to_owned(), self.release_id.to_string()),
            ]),
            ordering_key: Some(self.app.clone()),
        }
    }
}

/// The part of Cloud Build's `Build` resource that its `cloud-builds` notifications carry and
/// Runway reads. The local builder publishes the same shape.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildNotification {
    pub id: String,
    pub status: CloudBuildStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<BuildResults>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_info: Option<FailureInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    /// Runway tags each build `release-<id>`, so a notification finds its release even if it
    /// arrives before the build id was recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// When the build began and stopped running (RFC 3339), for its duration. Kept as sent:
    /// a notification is only a hint, and a time it garbles must not cost the build its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildResults {
    #[serde(default)]
    pub images: Vec<BuiltImage>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BuiltImage {
    pub name: String,
    #[serde(default)]
    pub digest: String,
}

impl BuiltImage {
    /// The image by digest, `REPO/NAME@sha256:…`, as the platform should run it: Cloud Build
    /// names the image as pushed, tag included (`REPO/NAME:COMMIT`), and a tag can move.
    pub fn reference(&self) -> String {
        if self.digest.is_empty() {
            return self.name.clone();
        }
        format!("{}@{}", untagged(&self.name), self.digest)
    }
}

/// `repo/app:tag` → `repo/app` (a registry port's colon comes before the last `/`).
pub fn untagged(image: &str) -> &str {
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].find(':') {
        Some(colon) => &image[..name_start + colon],
        None => image,
    }
}

/// A build's status, as Cloud Build names it (and the local builder too).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CloudBuildStatus {
    Pending,
    Queued,
    Working,
    Success,
    Failure,
    InternalError,
    Timeout,
    Cancelled,
    Expired,
    /// Also any status this version of Runway does not know.
    #[default]
    #[serde(other)]
    StatusUnknown,
}

impl CloudBuildStatus {
    /// The status a name stands for (`StatusUnknown` for one Runway does not know).
    pub fn parse(name: &str) -> Self {
        serde_json::from_value(serde_json::Value::from(name)).unwrap_or_default()
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::StatusUnknown => "STATUS_UNKNOWN",
            Self::Pending => "PENDING",
            Self::Queued => "QUEUED",
            Self::Working => "WORKING",
            Self::Success => "SUCCESS",
            Self::Failure => "FAILURE",
            Self::InternalError => "INTERNAL_ERROR",
            Self::Timeout => "TIMEOUT",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
        }
    }
}

impl std::fmt::Display for CloudBuildStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A finished build, as the worker acts on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildEnded {
    /// The image to run, by digest; `None` if the build pushed none.
    Succeeded { image: Option<String> },
    Failed {
        status: CloudBuildStatus,
        detail: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FailureInfo {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub detail: String,
}

impl BuildNotification {
    /// How long the build ran, when both its times are there and make sense.
    pub fn ran_for(&self) -> Option<std::time::Duration> {
        let time =
            |text: &Option<String>| chrono::DateTime::parse_from_rfc3339(text.as_deref()?).ok();
        (time(&self.finish_time)? - time(&self.start_time)?)
            .to_std()
            .ok()
    }

    pub fn release_tag(release_id: &ReleaseId) -> String {
        format!("release-{release_id}")
    }

    /// The release this build was made for, from its tags.
    pub fn release_id(&self) -> Option<ReleaseId> {
        self.tags
            .iter()
            .find_map(|tag| tag.strip_prefix("release-"))
            .map(ReleaseId::from)
    }

    pub fn is_finished(&self) -> bool {
        !matches!(
            self.status,
            CloudBuildStatus::Queued | CloudBuildStatus::Working | CloudBuildStatus::Pending
        )
    }

    /// What the notification means for its release: nothing yet while the build runs; its
    /// image (by digest) when it succeeded; why, when it did not.
    pub fn ended(&self) -> Option<BuildEnded> {
        if !self.is_finished() {
            return None;
        }
        Some(if self.status == CloudBuildStatus::Success {
            BuildEnded::Succeeded {
                image: self
                    .results
                    .as_ref()
                    .and_then(|results| results.images.first())
                    .map(BuiltImage::reference),
            }
        } else {
            BuildEnded::Failed {
                detail: self
                    .failure_info
                    .as_ref()
                    .map(|info| info.detail.clone())
                    .filter(|detail| !detail.is_empty())
                    .unwrap_or_else(|| self.status.as_str().to_owned()),
                status: self.status.clone(),
            }
        })
    }

    pub fn to_message(&self, app: &str) -> OutboundMessage {
        OutboundMessage {
            data: serde_json::to_vec(self).expect("a build notification serializes"),
            attributes: BTreeMap::from([
                ("buildId".to_owned(), self.id.clone()),
                ("status".to_owned(), self.status.as_str().to_owned()),
            ]),
            ordering_key: Some(app.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_tag_but_not_a_registry_port() {
        assert_eq!(
            untagged("eu-docker.pkg.dev/p/r/app:abc"),
            "eu-docker.pkg.dev/p/r/app"
        );
        assert_eq!(
            untagged("localhost:5000/r/app:latest"),
            "localhost:5000/r/app"
        );
        assert_eq!(untagged("localhost:5000/r/app"), "localhost:5000/r/app");
    }

    #[test]
    fn a_notification_decodes_into_what_the_build_ended_with() {
        let decode = |json: &str| serde_json::from_str::<BuildNotification>(json).unwrap();

        let running = decode(r#"{"id":"b","status":"WORKING"}"#);
        assert_eq!(running.ended(), None);

        let built = decode(
            r#"{"id":"b","status":"SUCCESS","results":{"images":[{"name":"r/app:c1","digest":"sha256:ff"}]}}"#,
        );
        assert_eq!(
            built.ended(),
            Some(BuildEnded::Succeeded {
                image: Some("r/app@sha256:ff".into())
            })
        );

        let failed = decode(
            r#"{"id":"b","status":"FAILURE","failureInfo":{"type":"USER_BUILD_STEP","detail":"step 1 failed"}}"#,
        );
        assert_eq!(
            failed.ended(),
            Some(BuildEnded::Failed {
                status: CloudBuildStatus::Failure,
                detail: "step 1 failed".into()
            })
        );

        // A status Cloud Build adds later is not mistaken for a running build.
        let novel = decode(r#"{"id":"b","status":"PAUSED_FOR_APPROVAL"}"#);
        assert_eq!(novel.status, CloudBuildStatus::StatusUnknown);
        assert!(matches!(novel.ended(), Some(BuildEnded::Failed { .. })));
    }

    #[test]
    fn an_image_is_referenced_by_digest_without_its_tag() {
        let image = |name: &str, digest: &str| BuiltImage {
            name: name.into(),
            digest: digest.into(),
        };
        let repo = "europe-west1-docker.pkg.dev/p/runway-apps/demo";
        assert_eq!(
            image(&format!("{repo}:0a1b2c"), "sha256:ff").reference(),
            format!("{repo}@sha256:ff")
        );
        assert_eq!(
            image(repo, "sha256:ff").reference(),
            format!("{repo}@sha256:ff")
        );
        // A registry's port is not a tag.
        assert_eq!(
            image("localhost:5000/demo:v1", "sha256:ff").reference(),
            "localhost:5000/demo@sha256:ff"
        );
        assert_eq!(image("/builds/42", "").reference(), "/builds/42");
    }
}
