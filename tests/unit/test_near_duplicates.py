"""Near-duplicate marking of search hits by stored decoder neighbours."""

from app.db.search import SearchHit
from app.web.views import near_duplicates


def _hit(feature_id: int, index: int, sae: str = "res1") -> SearchHit:
    return SearchHit("m", sae, index, 1, feature_id, 0.01, 1.0, feature_id, "label", "", {}, 1.0)


def test_a_hit_is_marked_against_the_best_close_feature_ranked_above_it():
    hits = [_hit(10, 0), _hit(11, 1), _hit(12, 2), _hit(13, 3), _hit(20, 1, sae="other")]
    neighbours = {
        11: [[0, 0.95]],  # 1 duplicates 0, found on 1's side
        10: [[2, 0.85], [3, 0.5]],  # 2 duplicates 0, found on 0's side; 3 is too far
        12: [[1, 0.9]],  # 2 is closer to 1 than to 0: marked against 1
        20: [[0, 0.99]],  # another SAE's index 0 is not this feature
    }
    found = near_duplicates(hits, neighbours)
    assert found == {11: (0, 0.95), 12: (1, 0.9)}


def test_another_label_of_the_same_feature_is_not_its_own_duplicate():
    hits = [_hit(10, 0), _hit(10, 0), _hit(11, 1)]
    assert near_duplicates(hits, {10: [[1, 0.99]]}) == {11: (0, 0.99)}
