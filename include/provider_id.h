/*
 * provider_id.h — who a provider is: the small set of ids the daemon's tables
 * are indexed by, and the names they stand for (oauth_accounts.provider).
 * store, spool, metrics and http include this instead of config.h when an id
 * and its name is all they need. provider_id.c owns the process-wide table of
 * generic providers' names; it knows nothing of their configuration.
 */
#ifndef OAUTH_PROVIDER_ID_H
#define OAUTH_PROVIDER_ID_H

#include "common.h"

/*
 * Provider ids. The three named dialects have fixed ids; any other provider
 * (a [provider.NAME] section with dialect = oauth2) gets an id from
 * PROVIDER_NAMED_COUNT up, given the first time a config that names it is
 * accepted and kept for the life of the process, so a reload never gives a
 * job in flight's id to another provider. Ids differ between processes:
 * anything durable (the spool) names the provider instead.
 */
enum provider_id {
    PROVIDER_GOOGLE,
    PROVIDER_GITHUB,
    PROVIDER_MICROSOFT,
    PROVIDER_NAMED_COUNT, /* the first id of a generic provider */
};
#define PROVIDER_MAX      16 /* ids 0 .. PROVIDER_MAX - 1, named and generic together */
#define PROVIDER_NAME_MAX 20 /* oauth_accounts.provider is VARCHAR(20) */

/*
 * "google" -> PROVIDER_GOOGLE, a generic name -> its id once a config that
 * names it was accepted in this process; -1 for an unknown name.
 */
int provider_id_from_name(const char *name);
/* The name of an id; "unknown" for an id no accepted config gave out. */
const char *provider_id_name(enum provider_id id);
/* A generic provider's name: [a-z] then up to 19 of [a-z0-9_-]. */
bool provider_name_valid(const char *name);
/*
 * The id of a generic name, given now if it has none; -1 when the name is
 * not valid, is a named provider, or every id is given out. Only the config
 * loader (and tests) call it; ids are never taken back.
 */
int provider_id_register(const char *name);

#endif
