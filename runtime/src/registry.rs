//! The set of actor types a server runs.

use std::rc::Rc;

use crate::actor::{Actor, ActorType, TypeOf};

/// The actor types a server serves. Built once, on any thread; every shard instantiates its own
/// copy of each type's action table at start (nothing is shared between shards).
#[derive(Clone, Default)]
pub struct Registry {
    types: Vec<(&'static str, BuildType)>,
}

/// Builds one shard's instance of an actor type.
type BuildType = fn() -> Rc<dyn ActorType>;

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds actor type `A`.
    ///
    /// # Panics
    /// If a type with the same name is already registered: that is a programming error that
    /// would otherwise make one of the two types unreachable.
    pub fn register<A: Actor>(mut self) -> Registry {
        assert!(
            self.types.iter().all(|(name, _)| *name != A::NAME),
            "actor type {} registered twice",
            A::NAME
        );
        self.types.push((A::NAME, TypeOf::<A>::build));
        self
    }

    /// The registered type names, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.types.iter().map(|(name, _)| *name)
    }

    pub(crate) fn instantiate(&self) -> Vec<Rc<dyn ActorType>> {
        self.types.iter().map(|(_, build)| build()).collect()
    }
}
