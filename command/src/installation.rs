//! The `Installation` aggregate: what holds for the whole installation, one stream. Today
//! that is its operator — the account that runs the platform, whose administrators adjust
//! other accounts' balances and whose gateways take the other accounts' payments (DESIGN
//! §1, §8). The first account opened becomes the operator, in the append that opens it.

use serde::{Deserialize, Serialize};

use crate::{
    domain::AccountId,
    event_log::EventCodec,
    handler::{Aggregate, Inconsistent},
};

pub const INSTALLATION_STREAM: &str = "installation";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum InstallationEvent {
    OperatorDesignated { account_id: AccountId },
}

impl EventCodec for InstallationEvent {
    const STREAM_TYPE: &'static str = "installation";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallationCommand {
    /// `account_id` runs the platform, unless an account already does.
    DesignateOperatorIfNone(AccountId),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installation {
    pub operator: Option<AccountId>,
}

impl Aggregate for Installation {
    type Command = InstallationCommand;
    type Event = InstallationEvent;
    type Error = std::convert::Infallible;

    fn decide(&self, command: InstallationCommand) -> Result<Vec<InstallationEvent>, Self::Error> {
        let InstallationCommand::DesignateOperatorIfNone(account_id) = command;
        Ok(match self.operator {
            Some(_) => Vec::new(),
            None => vec![InstallationEvent::OperatorDesignated { account_id }],
        })
    }

    fn evolve(&mut self, event: InstallationEvent, _version: i64) -> Result<(), Inconsistent> {
        let InstallationEvent::OperatorDesignated { account_id } = event;
        match self.operator {
            Some(_) => Err(Inconsistent("a second operator")),
            None => {
                self.operator = Some(account_id);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::testing::given;

    #[test]
    fn the_first_account_designated_stays_the_operator() {
        let (first, second) = (AccountId::new(), AccountId::new());
        given::<Installation>(vec![])
            .when(InstallationCommand::DesignateOperatorIfNone(first))
            .then(vec![InstallationEvent::OperatorDesignated {
                account_id: first,
            }]);
        given::<Installation>(vec![InstallationEvent::OperatorDesignated {
            account_id: first,
        }])
        .when(InstallationCommand::DesignateOperatorIfNone(second))
        .then(vec![]);
    }
}
