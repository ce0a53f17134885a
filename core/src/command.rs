//! Which command lines a `command` action may run: one home for the rule
//! the API applies at schedule time and the runner applies again before
//! each attempt (the operator may have tightened it since).
//!
//! The operator allows whole command lines, not programs: each rule is a
//! program followed by one pattern per argument — a literal, `*` (any one
//! argument) or, last, `**` (any further arguments). A program listed alone
//! runs with no arguments at all, so allowing `env` does not allow
//! `env sh -c …`. Rules are written `program pattern…`, whitespace-separated
//! (`/usr/local/bin/notify --channel *`).

/// One allowed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRule {
    /// The program, exactly as an action names it (a name or a path).
    pub program: String,
    /// One pattern per argument.
    pub args: Vec<ArgPattern>,
}

/// What one argument may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgPattern {
    /// Exactly this text.
    Literal(String),
    /// Any one argument (`*`).
    One,
    /// Any number of further arguments, none included (`**`, last only).
    Rest,
}

/// Which command lines may run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CommandPolicy {
    /// None: `command` actions are off.
    #[default]
    Off,
    /// Those matching one of these rules.
    Rules(Vec<CommandRule>),
    /// Any (structure checks only; never an operator's policy).
    Any,
}

/// Why a command line may not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandRefused {
    /// Commands are off.
    Off,
    /// No rule names the program.
    Program,
    /// Rules name the program, but none matches the arguments.
    Args,
}

impl CommandRule {
    /// Parses `program pattern…`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = text.split_whitespace();
        let program = tokens.next().ok_or_else(|| "an empty rule".to_owned())?.to_owned();
        let args: Vec<ArgPattern> = tokens
            .map(|token| match token {
                "*" => ArgPattern::One,
                "**" => ArgPattern::Rest,
                literal => ArgPattern::Literal(literal.to_owned()),
            })
            .collect();
        if args.iter().rev().skip(1).any(|a| *a == ArgPattern::Rest) {
            return Err(format!("{text:?}: ** may only be the last pattern"));
        }
        Ok(Self { program, args })
    }

    /// Whether `program args…` matches this rule.
    pub fn allows(&self, program: &str, args: &[String]) -> bool {
        if program != self.program {
            return false;
        }
        let mut given = args.iter();
        for pattern in &self.args {
            match pattern {
                ArgPattern::Rest => return true,
                ArgPattern::One => {
                    if given.next().is_none() {
                        return false;
                    }
                }
                ArgPattern::Literal(text) => {
                    if given.next() != Some(text) {
                        return false;
                    }
                }
            }
        }
        given.next().is_none()
    }
}

impl CommandPolicy {
    /// Rules from the operator's entries; no entries: commands off.
    pub fn from_rules(entries: &[String]) -> Result<Self, String> {
        let rules = entries
            .iter()
            .filter(|e| !e.trim().is_empty())
            .map(|e| CommandRule::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(if rules.is_empty() { Self::Off } else { Self::Rules(rules) })
    }

    /// Whether `program args…` may run.
    pub fn check(&self, program: &str, args: &[String]) -> Result<(), CommandRefused> {
        match self {
            Self::Off => Err(CommandRefused::Off),
            Self::Any => Ok(()),
            Self::Rules(rules) => {
                if rules.iter().any(|r| r.allows(program, args)) {
                    Ok(())
                } else if rules.iter().any(|r| r.program == program) {
                    Err(CommandRefused::Args)
                } else {
                    Err(CommandRefused::Program)
                }
            }
        }
    }
}

impl CommandRefused {
    /// The rule broken, phrased for a person.
    pub fn message(self) -> &'static str {
        match self {
            Self::Off => {
                "command actions are disabled: the operator has not configured an allow-list of command lines"
            }
            Self::Program => "is not in the operator's allow-list of command lines",
            Self::Args => "do not match any of the operator's allowed command lines for this program",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| (*a).to_owned()).collect()
    }

    fn policy(rules: &[&str]) -> CommandPolicy {
        CommandPolicy::from_rules(&args(rules)).expect("valid rules")
    }

    #[test]
    fn a_program_alone_runs_without_arguments_only() {
        let p = policy(&["env", "/bin/true"]);
        assert_eq!(p.check("env", &[]), Ok(()));
        assert_eq!(p.check("env", &args(&["sh", "-c", "id"])), Err(CommandRefused::Args));
        assert_eq!(p.check("cat", &args(&["/etc/passwd"])), Err(CommandRefused::Program));
        assert_eq!(p.check("/bin/true", &[]), Ok(()));
    }

    #[test]
    fn patterns_match_one_argument_each_and_the_rest_last() {
        let p = policy(&["/usr/local/bin/notify --channel *", "/usr/bin/logger -t minoots **"]);
        assert_eq!(p.check("/usr/local/bin/notify", &args(&["--channel", "ops"])), Ok(()));
        assert_eq!(p.check("/usr/local/bin/notify", &args(&["--channel"])), Err(CommandRefused::Args));
        assert_eq!(
            p.check("/usr/local/bin/notify", &args(&["--channel", "ops", "--exec", "x"])),
            Err(CommandRefused::Args)
        );
        assert_eq!(p.check("/usr/local/bin/notify", &args(&["--other", "ops"])), Err(CommandRefused::Args));
        assert_eq!(p.check("/usr/bin/logger", &args(&["-t", "minoots"])), Ok(()));
        assert_eq!(p.check("/usr/bin/logger", &args(&["-t", "minoots", "a", "b"])), Ok(()));
        assert_eq!(p.check("/usr/bin/logger", &args(&["-t", "other"])), Err(CommandRefused::Args));
    }

    #[test]
    fn rules_parse_strictly() {
        assert_eq!(CommandPolicy::from_rules(&[]), Ok(CommandPolicy::Off));
        assert_eq!(CommandPolicy::from_rules(&args(&["  "])), Ok(CommandPolicy::Off));
        assert!(CommandRule::parse("x ** y").is_err());
        assert_eq!(CommandPolicy::Off.check("x", &[]), Err(CommandRefused::Off));
        assert_eq!(CommandPolicy::Any.check("x", &args(&["y"])), Ok(()));
    }
}
