//! `Identify`: probes (images or embeddings) against the gallery of their model, open-set.

use super::*;

impl Identities {
    pub async fn identify(&self, probes: Vec<Probe>, options: IdentifyOptions) -> IdentityResult<Vec<Identification>> {
        if probes.is_empty() {
            return Err(IdentityError::invalid("no probes"));
        }
        self.check_items("probes", probes.len())?;
        if let Some(t) = options.threshold
            && !(-1.0..=1.0).contains(&t)
        {
            return Err(IdentityError::invalid(format!("threshold {t} is not a cosine similarity")));
        }
        if options.top_k > MAX_TOP_K {
            return Err(IdentityError::invalid(format!("top_k {} is over the limit of {MAX_TOP_K}", options.top_k)));
        }
        check_cameras(&options.cameras)?;
        // Validate every embedding and resolve every gallery before searching anything.
        let mut resolved: Vec<Option<(Vec<f32>, Gallery)>> = vec![None; probes.len()];
        let mut images = Vec::new();
        for (i, probe) in probes.into_iter().enumerate() {
            match probe {
                Probe::Image(image) => images.push((i, image)),
                Probe::Embedding(vector, model) => {
                    let gallery = self.gallery_for_embeddings(&model).await?;
                    check_embedding(i, &vector, &gallery.model)?;
                    resolved[i] = Some((vector, gallery));
                }
            }
        }
        if !images.is_empty() {
            let (slots, images): (Vec<usize>, Vec<Image>) = images.into_iter().unzip();
            let (vectors, gallery) = self.embed(images).await?;
            for (slot, vector) in slots.into_iter().zip(vectors) {
                resolved[slot] = Some((vector, gallery.clone()));
            }
        }
        let top_k = if options.top_k == 0 { self.config.association.default_top_k } else { options.top_k };
        let mut out = Vec::with_capacity(resolved.len());
        for (vector, gallery) in resolved.into_iter().flatten() {
            let mut filter = Filter::all();
            if !options.cameras.is_empty() {
                filter = filter.keyword_in(field::CAMERA, options.cameras.clone());
            }
            let limit = self.config.association.search_limit.max(top_k);
            let query = SearchQuery {
                hnsw_ef: self.config.association.hnsw_ef,
                with_vectors: options.rerank,
                ..SearchQuery::new(vector.clone(), limit)
            };
            let hits = self.store.search(&gallery.collection, &query.filter(filter)).await?;
            let threshold = self.threshold(&gallery, options.threshold);
            let (ranked, verdict) = if options.rerank {
                let with_vectors: Vec<(Match, Vec<f32>)> =
                    hits.iter().filter_map(|h| Some((as_match(h)?, h.vector.clone()?))).collect();
                let ranked =
                    association::rerank_identities(&vector, &with_vectors, self.config.association.rerank.into());
                let verdict = association::decide_reranked(&ranked, threshold);
                (ranked, verdict)
            } else {
                let ranked = association::rank_identities(&hits.iter().filter_map(as_match).collect::<Vec<_>>());
                let verdict = association::decide(&ranked, threshold, self.config.association.min_margin);
                (ranked, verdict)
            };
            let names: HashMap<String, String> = self
                .catalog
                .identities_named(ranked.iter().take(top_k).map(|m| m.identity.clone()).collect())
                .await?
                .into_iter()
                .map(|e| (e.identity, e.name))
                .collect();
            let candidates = ranked
                .into_iter()
                .take(top_k)
                .map(|m| Candidate {
                    name: names.get(&m.identity).cloned().unwrap_or_default(),
                    identity: m.identity,
                    score: m.score,
                    camera: m.camera,
                    seen_ms: m.end_ms,
                })
                .collect();
            self.metrics
                .identify_decisions
                .with_label_values(&[if matches!(verdict, Verdict::Known { .. }) { "known" } else { "unknown" }])
                .inc();
            out.push(Identification { verdict, candidates, model: gallery.model.clone() });
        }
        Ok(out)
    }
}
