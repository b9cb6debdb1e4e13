/*
 * provider_id.c — provider ids and names (provider_id.h). The three named
 * providers' names are fixed; a generic provider's name is registered by the
 * config loader the first time a config naming it is accepted, and its id is
 * never given to another name for the life of the process.
 *
 * It must never take an id back or reuse one: jobs in flight and the engine's
 * per-provider state are indexed by id across reloads.
 */
#include "provider_id.h"

#include <stdio.h>
#include <string.h>

static const char *const provider_names[PROVIDER_NAMED_COUNT] = {"google", "github", "microsoft"};

/*
 * The generic providers' names by id, for the life of the process (provider_id.h):
 * filled by the loader of an accepted config on the loop's thread, never
 * emptied, so a name read here stays valid.
 */
static char registered_names[PROVIDER_MAX][PROVIDER_NAME_MAX + 1];

static int named_id(const char *name)
{
    for (int i = 0; i < PROVIDER_NAMED_COUNT; i++) {
        if (strcmp(name, provider_names[i]) == 0)
            return i;
    }
    return -1;
}

int provider_id_from_name(const char *name)
{
    if (name == NULL)
        return -1;
    int id = named_id(name);
    if (id >= 0 || !provider_name_valid(name))
        return id;
    for (int i = PROVIDER_NAMED_COUNT; i < PROVIDER_MAX; i++) {
        if (strcmp(name, registered_names[i]) == 0)
            return i;
    }
    return -1;
}

const char *provider_id_name(enum provider_id id)
{
    if ((int)id < 0 || id >= PROVIDER_MAX)
        return "unknown";
    if (id < PROVIDER_NAMED_COUNT)
        return provider_names[id];
    return registered_names[id][0] ? registered_names[id] : "unknown";
}

bool provider_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    /* A letter first: the spool tells a name from a named provider's digit by it. */
    if (n == 0 || n > PROVIDER_NAME_MAX || name[0] < 'a' || name[0] > 'z')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
    }
    return true;
}

int provider_id_register(const char *name)
{
    if (!provider_name_valid(name) || named_id(name) >= 0)
        return -1;
    int id = provider_id_from_name(name);
    if (id >= 0)
        return id;
    for (int i = PROVIDER_NAMED_COUNT; i < PROVIDER_MAX; i++) {
        if (registered_names[i][0] == '\0') {
            snprintf(registered_names[i], sizeof(registered_names[i]), "%s", name);
            return i;
        }
    }
    return -1;
}
