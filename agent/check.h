/* `spotd check`: one read of every source, printed as text or JSON. */
#pragma once
#include <stdio.h>

#include "config.h"

/* Returns the exit status: 0 when the metadata service answered every
 * enabled source, 1 otherwise (each failure is described in the output). */
int check_run(const struct config *cfg, FILE *out);
