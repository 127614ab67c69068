//! A retry is told the truth when the facade forgot its association. The facade remembers each
//! association it made (`crate::replay`); when its store forgets (a Redis restart with nothing on
//! disk, a failover that lost the last writes, an eviction), a caller that retries a call whose
//! answer it lost reaches AWS again, which refuses it: "Persistent chat is already enabled for
//! contact …" (`InvalidRequestException`). That is not an invalid request: the association
//! happened, perhaps exactly as asked.
//!
//! - Always: the refusal ([`crate::upstream::UpstreamError::is_already_associated`], by code and
//!   message together) becomes FAILED_PRECONDITION with reason ALREADY_ASSOCIATED, the reason the
//!   facade's own conflicts use, marked `remembered: false`, with a message that says a retry of a
//!   call that may have succeeded should be treated as done.
//! - With `--reconcile-associations`: the facade asks AWS which chat the contact continues
//!   (DescribeContact: its `RelatedContactId` is "the contactId used to source chat rehydration",
//!   the association's ContinuedFromContactId; its `ContactAssociationId` the root of the contact
//!   tree, the first contact of the session it continues). When that is what the call asks for,
//!   the call is answered OK as if remembered, and remembered again (it is the call's success, so
//!   the replayer keeps it); otherwise ALREADY_ASSOCIATED names the chat it continues. AWS is asked
//!   twice at most: the refused association and one DescribeContact.
//!
//! Why these fields decide, and what they cannot tell apart: the book's errors chapter.

use crate::{
    domain::{AssociationRequest, RehydrationType},
    error::{CallError, ExistingAssociation},
    routes::router::Route,
    upstream::{Association, ContactLinks},
};

use super::metrics::RpcMetrics;

/// The call's outcome, with an association AWS reports and the facade forgot settled as above.
pub(crate) async fn settle(
    route: &Route,
    request: &AssociationRequest,
    metrics: &RpcMetrics,
    outcome: Result<Association, CallError>,
) -> Result<Association, CallError> {
    let aws_request_id = match &outcome {
        Err(CallError::Upstream(refusal)) if refusal.is_already_associated() => {
            refusal.request_id.clone()
        }
        _ => return outcome,
    };
    let forgotten = |continued_from_contact_id: Option<String>| CallError::AlreadyAssociated {
        initial_contact_id: request.initial_contact_id().to_owned(),
        existing: ExistingAssociation::Forgotten {
            continued_from_contact_id,
            aws_request_id: aws_request_id.clone(),
        },
    };
    if !route.reconcile {
        metrics.forgotten_association("unconfirmed");
        return Err(forgotten(None));
    }
    let links = route
        .upstream
        .contact_links(request.instance_id(), request.initial_contact_id())
        .await;
    match links {
        Ok(links) if asked_for(request, &links) => {
            metrics.forgotten_association("confirmed");
            tracing::info!(
                related_contact_id = links.related_contact_id.as_deref(),
                "the association Amazon Connect reports is the one asked for: answered OK and remembered again"
            );
            Ok(Association {
                continued_from_contact_id: links.related_contact_id.unwrap_or_default(),
                request_id: links.request_id,
            })
        }
        Ok(links) => {
            metrics.forgotten_association("differs");
            Err(forgotten(links.related_contact_id))
        }
        Err(error) => {
            metrics.forgotten_association("unconfirmed");
            tracing::warn!(
                error = error.message,
                aws_error_code = error.aws_code.as_deref(),
                "cannot confirm the association Amazon Connect reports (DescribeContact): answered ALREADY_ASSOCIATED; an AccessDeniedException means the role lacks connect:DescribeContact"
            );
            Err(forgotten(None))
        }
    }
}

/// Whether the association DescribeContact reports is the one `request` asks for: FROM_SEGMENT
/// continues from its source itself; ENTIRE_PAST_SESSION from the latest contact of the session
/// its source started, whose tree's root is that source (or the source itself, a session of one
/// contact).
fn asked_for(request: &AssociationRequest, links: &ContactLinks) -> bool {
    let Some(related) = links.related_contact_id.as_deref() else {
        return false;
    };
    let source = request.source_contact_id();
    match request.rehydration_type() {
        RehydrationType::FromSegment => related == source,
        RehydrationType::EntirePastSession => {
            related == source || links.contact_association_id.as_deref() == Some(source)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UnvalidatedRequest;

    fn request(rehydration_type: RehydrationType, source: &str) -> AssociationRequest {
        AssociationRequest::parse(UnvalidatedRequest {
            instance_id: "11111111-2222-3333-4444-555555555555".into(),
            initial_contact_id: "new-chat".into(),
            rehydration_type: Some(rehydration_type),
            source_contact_id: source.into(),
            client_token: String::new(),
        })
        .unwrap()
    }

    fn links(related: Option<&str>, root: Option<&str>) -> ContactLinks {
        ContactLinks {
            related_contact_id: related.map(str::to_owned),
            contact_association_id: root.map(str::to_owned),
            request_id: None,
        }
    }

    #[test]
    fn the_reported_association_is_the_asked_one_by_its_source_or_its_session() {
        let from_c2 = request(RehydrationType::FromSegment, "C2");
        assert!(asked_for(&from_c2, &links(Some("C2"), Some("C1"))));
        assert!(!asked_for(&from_c2, &links(Some("C3"), Some("C1"))));
        let session_c1 = request(RehydrationType::EntirePastSession, "C1");
        assert!(asked_for(&session_c1, &links(Some("C3"), Some("C1"))));
        assert!(asked_for(&session_c1, &links(Some("C1"), None)));
        assert!(!asked_for(&session_c1, &links(Some("C3"), Some("C9"))));
        assert!(
            !asked_for(&session_c1, &links(None, Some("C1"))),
            "no association reported"
        );
    }
}
