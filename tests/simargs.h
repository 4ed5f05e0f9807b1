/* The spotd flags that point it at a running IMDS and Kubernetes API
 * simulator: one place for what every end-to-end test and benchmark
 * passes. */
#pragma once
#include <stdio.h>

#include "imds_sim.h"
#include "k8s_sim.h"

struct sim_args {
        char imds[128], api[128], ca[1100], token[1100];
};

static inline void sim_args_fill(struct sim_args *a, struct imds_sim *imds, struct k8s_sim *kube) {
        char url[64];
        imds_sim_url(imds, url, sizeof url);
        snprintf(a->imds, sizeof a->imds, "--imds-endpoint=%s", url);
        k8s_sim_url(kube, url, sizeof url);
        snprintf(a->api, sizeof a->api, "--kube-api=%s", url);
        snprintf(a->ca, sizeof a->ca, "--kube-ca-file=%s", k8s_sim_ca_file(kube));
        snprintf(a->token, sizeof a->token, "--kube-token-file=%s", k8s_sim_token_file(kube));
}
