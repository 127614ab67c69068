//! The contact model behind CreatePersistentContactAssociation, with the documented semantics:
//!
//! - FROM_SEGMENT continues from the given ended chat contact itself.
//! - ENTIRE_PAST_SESSION takes the first contact of an ended session and continues from the session's
//!   most recent contact (C1 → C3 in the documentation's C1/C2/C3 example).
//! - Only chats that have ended may be rehydrated, into an active chat (the Administrator Guide).
//! - Persistence can be enabled on an initial contact once. Repeating the call with the same ClientToken
//!   and the same parameters answers the first result again; the same token with other parameters, or a
//!   second association without the token, is an InvalidRequestException.

use std::collections::HashMap;

use super::fixtures::{Channel, ContactFixture, ContactState, InstanceFixture};

/// The API model's `RehydrationType`. The simulator keeps its own model of the operation (this
/// enum, the limits in [`super::wire`], the role ARN parser in [`super::identity`]) rather than
/// borrowing the facade's: a test double that shared the facade's mistakes would never catch them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RehydrationType {
    EntirePastSession,
    FromSegment,
}

/// Why an association was refused, as the AWS error it becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssociationError {
    /// ResourceNotFoundException.
    NotFound(String),
    /// InvalidRequestException.
    InvalidRequest(String),
}

/// The parameters of one association, as remembered for idempotent replay.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Association {
    initial_contact_id: String,
    rehydration_type: RehydrationType,
    source_contact_id: String,
    continued_from_contact_id: String,
}

#[derive(Debug, Default)]
struct Instance {
    contacts: HashMap<String, ContactFixture>,
    /// Unlisted initial contacts are fresh active chats, and their calls are not remembered.
    open_chats: bool,
    /// Associations by initial contact id.
    associations: HashMap<String, Association>,
    /// Associations by the client token that made them.
    by_token: HashMap<String, Association>,
}

/// All instances and their contacts.
#[derive(Debug, Default)]
pub struct ContactStore {
    instances: HashMap<String, Instance>,
}

impl ContactStore {
    pub fn new(instances: &[InstanceFixture]) -> Self {
        let instances = instances
            .iter()
            .map(|fixture| {
                let contacts = fixture
                    .contacts
                    .iter()
                    .map(|c| (c.id.clone(), c.clone()))
                    .collect();
                (
                    fixture.id.clone(),
                    Instance {
                        contacts,
                        open_chats: fixture.open_chats,
                        ..Instance::default()
                    },
                )
            })
            .collect();
        Self { instances }
    }

    /// Associates `initial_contact_id` with a past chat; answers the contact it continues from.
    pub fn associate(
        &mut self,
        instance_id: &str,
        initial_contact_id: &str,
        rehydration_type: RehydrationType,
        source_contact_id: &str,
        client_token: Option<&str>,
    ) -> Result<String, AssociationError> {
        let instance = self.instances.get_mut(instance_id).ok_or_else(|| {
            AssociationError::NotFound(format!("Instance {instance_id} not found"))
        })?;
        if let Some(previous) = client_token.and_then(|token| instance.by_token.get(token)) {
            let same = previous.initial_contact_id == initial_contact_id
                && previous.rehydration_type == rehydration_type
                && previous.source_contact_id == source_contact_id;
            return if same {
                Ok(previous.continued_from_contact_id.clone())
            } else {
                Err(AssociationError::InvalidRequest(
                    "ClientToken was already used with different parameters".to_owned(),
                ))
            };
        }
        let contact = |id: &str| {
            instance
                .contacts
                .get(id)
                .ok_or_else(|| AssociationError::NotFound(format!("Contact {id} not found")))
        };
        // An open instance's unlisted contact is a fresh active chat that nothing remembers.
        let remembered = !instance.open_chats || instance.contacts.contains_key(initial_contact_id);
        if remembered {
            let initial = contact(initial_contact_id)?;
            if initial.channel != Channel::Chat || initial.state != ContactState::Active {
                return Err(AssociationError::InvalidRequest(format!(
                    "Contact {initial_contact_id} is not an active chat contact"
                )));
            }
        }
        let source = contact(source_contact_id)?;
        if source.channel != Channel::Chat || source.state != ContactState::Ended {
            return Err(AssociationError::InvalidRequest(format!(
                "Contact {source_contact_id} is not a chat contact that has ended"
            )));
        }
        if instance.associations.contains_key(initial_contact_id) {
            return Err(AssociationError::InvalidRequest(format!(
                "Persistent chat is already enabled for contact {initial_contact_id}"
            )));
        }
        let continued_from_contact_id = match rehydration_type {
            RehydrationType::FromSegment => source_contact_id.to_owned(),
            RehydrationType::EntirePastSession => {
                if source.previous_contact_id.is_some() {
                    return Err(AssociationError::InvalidRequest(format!(
                        "Contact {source_contact_id} is not the initial contact of its session; \
                         ENTIRE_PAST_SESSION needs the session's first contact"
                    )));
                }
                most_recent_in_session(&instance.contacts, source_contact_id)
            }
        };
        if !remembered {
            return Ok(continued_from_contact_id);
        }
        let association = Association {
            initial_contact_id: initial_contact_id.to_owned(),
            rehydration_type,
            source_contact_id: source_contact_id.to_owned(),
            continued_from_contact_id: continued_from_contact_id.clone(),
        };
        if let Some(token) = client_token {
            instance
                .by_token
                .insert(token.to_owned(), association.clone());
        }
        instance
            .associations
            .insert(initial_contact_id.to_owned(), association);
        Ok(continued_from_contact_id)
    }
}

/// What DescribeContact tells of a contact's place in its sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactLinks {
    pub id: String,
    /// The first contact of its own session.
    pub initial_contact_id: String,
    pub previous_contact_id: Option<String>,
    /// For a rehydrated chat: the contact its association continues from.
    pub related_contact_id: Option<String>,
    /// The root of its contact tree: for a rehydrated chat, the first contact of the session it
    /// continues; otherwise the first of its own.
    pub contact_association_id: String,
    pub channel: Channel,
}

impl ContactStore {
    /// DescribeContact: a listed contact, or (on an open instance) a fresh chat, with its
    /// association if it has one.
    pub fn describe(
        &self,
        instance_id: &str,
        contact_id: &str,
    ) -> Result<ContactLinks, AssociationError> {
        let instance = self.instances.get(instance_id).ok_or_else(|| {
            AssociationError::NotFound(format!("Instance {instance_id} not found"))
        })?;
        let association = instance.associations.get(contact_id);
        let (channel, previous) = match instance.contacts.get(contact_id) {
            Some(contact) => (contact.channel, contact.previous_contact_id.clone()),
            None if instance.open_chats || association.is_some() => (Channel::Chat, None),
            None => {
                return Err(AssociationError::NotFound(format!(
                    "Contact {contact_id} not found"
                )));
            }
        };
        let initial = first_in_session(&instance.contacts, contact_id);
        let related = association.map(|a| a.continued_from_contact_id.clone());
        let root = related.as_deref().map_or_else(
            || initial.clone(),
            |related| first_in_session(&instance.contacts, related),
        );
        Ok(ContactLinks {
            id: contact_id.to_owned(),
            initial_contact_id: initial,
            previous_contact_id: previous,
            related_contact_id: related,
            contact_association_id: root,
            channel,
        })
    }
}

/// Follows the session back from `contact` to its first contact (a cycle stops where it closes).
fn first_in_session(contacts: &HashMap<String, ContactFixture>, contact: &str) -> String {
    let mut current = contact.to_owned();
    for _ in 0..contacts.len() {
        match contacts
            .get(&current)
            .and_then(|c| c.previous_contact_id.as_ref())
        {
            Some(previous) if previous != contact => current = previous.clone(),
            _ => break,
        }
    }
    current
}

/// Follows the session forward from `first` to its last contact. A branching session (two contacts
/// following the same one) continues along the smallest id, and a cycle stops where it closes, so bad
/// fixtures cannot hang the simulator.
fn most_recent_in_session(contacts: &HashMap<String, ContactFixture>, first: &str) -> String {
    let mut current = first.to_owned();
    for _ in 0..contacts.len() {
        let next = contacts
            .values()
            .filter(|c| c.previous_contact_id.as_deref() == Some(current.as_str()))
            .map(|c| &c.id)
            .min();
        match next {
            Some(next) if next != first => current = next.clone(),
            _ => break,
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::fixtures::Fixtures;

    fn open_demo() -> ContactStore {
        let mut instances = Fixtures::demo().instances;
        instances[0].open_chats = true;
        ContactStore::new(&instances)
    }

    #[test]
    fn a_rehydrated_chat_is_described_with_the_contact_it_continues_and_its_sessions_root() {
        let mut store = ContactStore::new(&Fixtures::demo().instances);
        let active = store.instances[INSTANCE]
            .contacts
            .values()
            .find(|c| c.state == ContactState::Active && c.channel == Channel::Chat)
            .map(|c| c.id.clone())
            .expect("the demo has an active chat");
        let before = store.describe(INSTANCE, &active).unwrap();
        assert_eq!(before.related_contact_id, None);
        store
            .associate(
                INSTANCE,
                &active,
                RehydrationType::EntirePastSession,
                "C1",
                None,
            )
            .unwrap();
        let after = store.describe(INSTANCE, &active).unwrap();
        assert_eq!(after.related_contact_id.as_deref(), Some("C3"));
        assert_eq!(after.contact_association_id, "C1");
        let c3 = store.describe(INSTANCE, "C3").unwrap();
        assert_eq!(
            (
                c3.initial_contact_id.as_str(),
                c3.contact_association_id.as_str()
            ),
            ("C1", "C1")
        );
        assert!(matches!(
            store.describe(INSTANCE, "nope"),
            Err(AssociationError::NotFound(_))
        ));
    }

    #[test]
    fn an_open_instance_treats_unlisted_contacts_as_fresh_chats_every_time() {
        let mut store = open_demo();
        for _ in 0..3 {
            let answer = store.associate(
                INSTANCE,
                "load-test-chat",
                RehydrationType::EntirePastSession,
                "C1",
                Some("same-token"),
            );
            assert_eq!(answer, Ok("C3".to_owned()));
        }
        assert!(store.instances[INSTANCE].associations.is_empty());
        assert!(store.instances[INSTANCE].by_token.is_empty());
    }

    #[test]
    fn an_open_instance_still_checks_sources_and_listed_contacts() {
        let mut store = open_demo();
        let unknown_source = store.associate(
            INSTANCE,
            "load-test-chat",
            RehydrationType::FromSegment,
            "nope",
            None,
        );
        assert!(matches!(unknown_source, Err(AssociationError::NotFound(_))));
        let listed_voice = store.associate(
            INSTANCE,
            "ended-call-1",
            RehydrationType::FromSegment,
            "C2",
            None,
        );
        assert!(matches!(
            listed_voice,
            Err(AssociationError::InvalidRequest(_))
        ));
        for expected in [Ok("C2".to_owned()), Err(())] {
            let listed = store
                .associate(
                    INSTANCE,
                    "new-chat-1",
                    RehydrationType::FromSegment,
                    "C2",
                    None,
                )
                .map_err(|_| ());
            assert_eq!(listed, expected, "listed chats are remembered as before");
        }
    }

    const INSTANCE: &str = "11111111-2222-3333-4444-555555555555";

    fn demo() -> ContactStore {
        ContactStore::new(&Fixtures::demo().instances)
    }

    #[test]
    fn from_segment_continues_from_the_segment_itself() {
        let answer = demo().associate(
            INSTANCE,
            "new-chat-1",
            RehydrationType::FromSegment,
            "C2",
            None,
        );
        assert_eq!(answer, Ok("C2".to_owned()));
    }

    #[test]
    fn entire_past_session_continues_from_the_most_recent_contact() {
        let answer = demo().associate(
            INSTANCE,
            "new-chat-1",
            RehydrationType::EntirePastSession,
            "C1",
            None,
        );
        assert_eq!(answer, Ok("C3".to_owned()));
    }

    #[test]
    fn entire_past_session_needs_the_sessions_first_contact() {
        let answer = demo().associate(
            INSTANCE,
            "new-chat-1",
            RehydrationType::EntirePastSession,
            "C2",
            None,
        );
        assert!(matches!(answer, Err(AssociationError::InvalidRequest(_))));
    }

    #[test]
    fn only_ended_chats_rehydrate_into_active_chats() {
        let mut store = demo();
        for (initial, source) in [
            ("new-chat-1", "ended-call-1"),
            ("new-chat-1", "ongoing-chat-1"),
            ("C1", "C2"),
        ] {
            let answer = store.associate(
                INSTANCE,
                initial,
                RehydrationType::FromSegment,
                source,
                None,
            );
            assert!(
                matches!(answer, Err(AssociationError::InvalidRequest(_))),
                "{initial} from {source}: {answer:?}"
            );
        }
    }

    #[test]
    fn unknown_instances_and_contacts_are_not_found() {
        let mut store = demo();
        let fs = RehydrationType::FromSegment;
        assert!(matches!(
            store.associate("nope", "new-chat-1", fs, "C1", None),
            Err(AssociationError::NotFound(_))
        ));
        assert!(matches!(
            store.associate(INSTANCE, "nope", fs, "C1", None),
            Err(AssociationError::NotFound(_))
        ));
        assert!(matches!(
            store.associate(INSTANCE, "new-chat-1", fs, "nope", None),
            Err(AssociationError::NotFound(_))
        ));
    }

    #[test]
    fn the_same_token_replays_and_anything_else_is_refused() {
        let mut store = demo();
        let fs = RehydrationType::FromSegment;
        assert_eq!(
            store.associate(INSTANCE, "new-chat-1", fs, "C2", Some("t1")),
            Ok("C2".to_owned())
        );
        assert_eq!(
            store.associate(INSTANCE, "new-chat-1", fs, "C2", Some("t1")),
            Ok("C2".to_owned())
        );
        for (source, token) in [("C1", Some("t1")), ("C2", Some("t2")), ("C2", None)] {
            assert!(matches!(
                store.associate(INSTANCE, "new-chat-1", fs, source, token),
                Err(AssociationError::InvalidRequest(_))
            ));
        }
    }
}
