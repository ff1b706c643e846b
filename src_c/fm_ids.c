/* Names of the ids of fm_ids.h. */
#include "fm_ids.h"

#include <stddef.h>

#define FM_ID_NAME_(id, name) name,
static const char *const fm_activation_names[] = {FM_ACTIVATION_LIST(FM_ID_NAME_)};
static const char *const fm_loss_names[] = {FM_LOSS_LIST(FM_ID_NAME_)};
static const char *const fm_rule_names[] = {FM_RULE_LIST(FM_ID_NAME_)};
static const char *const fm_level_names[] = {FM_LEVEL_LIST(FM_ID_NAME_)};
#undef FM_ID_NAME_

const char *fm_id_name(int table, int id)
{
    static const char *const *const names[] = {fm_activation_names, fm_loss_names,
                                                fm_rule_names, fm_level_names};
    static const int counts[] = {FM_N_ACTIVATIONS, FM_N_LOSSES, FM_N_RULES, FM_N_LEVELS};
    if (table < 0 || table > FM_TABLE_LEVELS || id < 0 || id >= counts[table])
        return NULL;
    return names[table][id];
}
