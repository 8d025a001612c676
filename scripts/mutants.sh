#!/usr/bin/env bash
# Hand-made one-line mutations of the core, each run against the core's
# tests: the protocol-model adversary alone (tests/adversary.rs), then the
# unit and simulated-time tests (cargo test -p resub --lib). A mutant is
# caught when a run fails. Not part of scripts/test.sh (it rebuilds once per
# mutant): run it after changing the core, in a clean checkout.
#
#   bash scripts/mutants.sh            # every mutant
#   bash scripts/mutants.sh 3 7        # only mutants 3 and 7
#
# Each line of MUTANTS is: file|text to replace (must occur once)|replacement|what it breaks
set -uo pipefail
cd "$(dirname "$0")/.."
git diff --quiet -- src || { echo "mutants.sh: src/ has uncommitted changes; run it in a clean checkout" >&2; exit 2; }

MUTANTS=$(cat <<'EOF'
src/core/cursor.rs|} else if seq <= cursor.seq() {|} else if seq < cursor.seq() {|duplicates of the event at the cursor are not dropped
src/core/cursor.rs|} else if seq - cursor.seq() == 1 {|} else if seq - cursor.seq() <= 2 {|a gap of 2 is accepted
src/core/cursor.rs|        (Outcome::Reset, _) => {\n            *cursor = Some(head);|        (Outcome::Reset, _) => {\n            if !cursor.as_ref().is_some_and(\|c\| c.epoch() == head.epoch() \&\& c.seq() > head.seq()) { *cursor = Some(head); }|a reset never moves the cursor backwards
src/core/cursor.rs|        (Outcome::Resumed, Some(c)) if head.seq() < c.seq() => {|        (Outcome::Resumed, Some(c)) if head.seq() < c.seq() \&\& false => {|a resumed answer below the cursor is trusted
src/core/session.rs|            Next::Deliver => cursor.set_seq(seq),|            Next::Deliver => {}|the cursor is not advanced
src/core/session.rs|        if bytes > limit {|        if bytes >= limit {|a frame of exactly the limit is refused
src/core/session.rs|            Some(hint) if !hint.is_zero() => hint.min(MAX_HINT) + self.config.backoff.delay(1, \&mut self.rng),|            Some(hint) if !hint.is_zero() => hint.min(MAX_HINT),|no jitter after a Retry-After
src/core/session.rs|                if (400..500).contains(\&status) \&\& !matches!(status, 408 \| 429) =>|                if (400..500).contains(\&status) \&\& !matches!(status, 408) =>|an HTTP publish answered 429 fails
src/core/session.rs|    let secs: u64 = whole.parse().unwrap_or(u64::MAX);|    let secs: u64 = whole.parse().ok()?;|a close-code hint too large to count is ignored
src/core/session.rs|            self.failures = 0;\n        }\n        self.failures = self.failures.saturating_add(1);|            self.failures = 0;\n        }\n        self.failures = self.failures.saturating_add(0);|the failure count never grows (no backoff)
src/core/session.rs|            _ => self.config.heartbeat_timeout.unwrap_or(interval * 2),|            _ => self.config.heartbeat_timeout.unwrap_or(interval / 2),|the heartbeat deadline is shorter than the interval
src/core/session.rs|            Some(n) if *n > 1 => {|            Some(n) if *n > 100 => {|an answer to a replaced subscribe is taken for the new one
src/core/session.rs|        let Some(sub) = self.subs.get_mut(\&channel).filter(\|s\| s.carried) else {\n            return; // Unsubscribed meanwhile, or subscribed anew since the request.|        let Some(sub) = self.subs.get_mut(\&channel) else {\n            return; // Unsubscribed meanwhile, or subscribed anew since the request.|a poll answer confirms a subscription made after its request
src/core/session.rs|                self.publishes[i].in_flight = false;|                self.publishes[i].in_flight = true;|a failed HTTP publish is never posted again
src/core/session.rs|                    self.send(id, \&ClientFrame::Ping);|                    |wake() sends no ping
EOF
)

only=" $* "
total=0 caught_adv=0 caught_any=0
report=()
i=0
while IFS= read -r line; do
  [ -n "$line" ] || continue
  i=$((i + 1))
  if [ $# -gt 0 ] && [[ "$only" != *" $i "* ]]; then continue; fi
  IFS='|' read -r file from to what <<<"$(printf '%s' "$line" | sed 's/\\|/\x01/g')"
  from=$(printf '%s' "$from" | tr '\001' '|'); to=$(printf '%s' "$to" | tr '\001' '|'); what=$(printf '%s' "$what" | tr '\001' '|')
  if ! python3 - "$file" "$from" "$to" <<'PY'
import sys
path, a, b = sys.argv[1], sys.argv[2].replace("\\n", "\n").replace("\\&", "&"), sys.argv[3].replace("\\n", "\n").replace("\\&", "&")
s = open(path).read()
if s.count(a) != 1:
    sys.exit(f"mutant text found {s.count(a)} times in {path}: {a!r}")
open(path, "w").write(s.replace(a, b))
PY
  then
    report+=("$i. $what: NOT APPLIED"); continue
  fi
  total=$((total + 1))
  adv=survived lib=survived
  if ! RESUB_ADVERSARY_SCHEDULES=${RESUB_ADVERSARY_SCHEDULES:-3000} cargo test -q -p resub --test adversary >/dev/null 2>&1; then
    adv=caught; caught_adv=$((caught_adv + 1))
  fi
  if ! RESUB_SCHEDULES=${RESUB_SCHEDULES:-2000} cargo test -q -p resub --lib >/dev/null 2>&1; then lib=caught; fi
  if [ "$adv" = caught ] || [ "$lib" = caught ]; then caught_any=$((caught_any + 1)); fi
  git checkout -q -- "$file"
  report+=("$i. $what: adversary $adv, unit and simulated-time tests $lib")
  echo "${report[-1]}"
done <<<"$MUTANTS"
echo
printf '%s\n' "${report[@]}"
echo "mutants: $total; caught by the adversary alone: $caught_adv; caught by either: $caught_any"
