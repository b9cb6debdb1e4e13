/*
 * ctl_db.h — the name the database subcommands' shared start had before it
 * became ctl_common.h (ctl_common.c owns it all); kept so that a file still
 * including it builds. New code includes ctl_common.h.
 */
#ifndef OAUTH_CTL_DB_H
#define OAUTH_CTL_DB_H

#include "ctl_common.h"

#endif
