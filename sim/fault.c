/*
 * The injected fault rule.
 */
#include "fault.h"

#include "state.h"
#include "text.h"

#include <string.h>

static fault_t rule;

void fault_arm(const fault_t *f)
{
	LOCK();
	rule = *f;
	UNLOCK();
}

void fault_clear(void)
{
	LOCK();
	memset(&rule, 0, sizeof rule);
	UNLOCK();
}

int fault_take(const char *url, fault_t *out)
{
	int hit;
	LOCK();
	hit = rule.count != 0 && path_matches(url, rule.path);
	if (hit) {
		*out = rule;
		if (rule.count > 0)
			rule.count--;
	}
	UNLOCK();
	return hit;
}

json_t *fault_json(void)
{
	json_t *f;
	LOCK();
	f = rule.count == 0 ? json_null()
		: json_pack("{s:o,s:i,s:b,s:i,s:o,s:o}", "status", rule.status ? json_integer(rule.status) : json_null(),
			    "delay_ms", rule.delay_ms, "drop", rule.drop, "count", rule.count,
			    "path", rule.path[0] ? json_string(rule.path) : json_null(),
			    "message", rule.message[0] ? json_string(rule.message) : json_null());
	UNLOCK();
	return f;
}
