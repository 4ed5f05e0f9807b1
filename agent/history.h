/* spotd history: reads spotd's entries back from the journal (the local one,
 * a journal directory, or a journal file copied off a dead node), groups them
 * by SPOTD_EVENT_ID (and SPOTD_NODE) and prints one timeline per event, as a
 * table or JSON. */
#pragma once
#include <stdio.h>

#include "config.h"
#include "timeutil.h"

/* At most this many entries are held (the newest), each message cut to
 * HISTORY_MESSAGE_MAX bytes; at most HISTORY_EVENTS_MAX timelines. */
#define HISTORY_ENTRIES_MAX 10000
#define HISTORY_EVENTS_MAX  1000
#define HISTORY_MESSAGE_MAX 512

/* Parses a --since value: an RFC 3339 time ("2026-11-25T12:00:00Z", with an
 * offset or fractional seconds) or a duration before now ("2h", "90m",
 * "1h30m", optionally followed by " ago"). Returns 0 and the realtime in
 * *ret_usec, or -EINVAL (*ret_usec untouched). */
int history_parse_since(const char *s, usec_t now, usec_t *ret_usec);

/* Runs the subcommand: cfg->history_directory / history_file pick the
 * journal (default: the local system journal), history_since and
 * history_node filter, cfg->output picks text or JSON. Writes the result to
 * out and one line per problem to err. Returns the exit status: 0, 1 when the
 * journal cannot be opened or read, 2 for an invalid --since or an
 * impossible combination of options. */
int history_run(const struct config *cfg, FILE *out, FILE *err);
