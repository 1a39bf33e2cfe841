import torch

from models.postprocess import PostProcessor


def test_top_k_is_clamped_to_queries_times_classes():
    outputs = {"pred_logits": torch.randn(2, 3, 1), "pred_boxes": torch.rand(2, 3, 4)}
    results = PostProcessor(num_classes=1, num_top_queries=300)(outputs, torch.tensor([[10, 10], [10, 10]]))
    assert [len(r["scores"]) for r in results] == [3, 3]
    two = {"pred_logits": torch.randn(1, 2, 2), "pred_boxes": torch.rand(1, 2, 4)}
    assert len(PostProcessor(num_classes=2)(two, torch.tensor([[10, 10]]))[0]["labels"]) == 4


def test_labels_scores_and_pixel_boxes_by_hand():
    # query 0: class 1 at 0.9; query 1: class 0 at 0.8; everything else 0.1
    probs = torch.tensor([[[0.1, 0.9], [0.8, 0.1]]])
    outputs = {"pred_logits": torch.log(probs / (1 - probs)),
               "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.5, 0.5]]])}
    # the image is 200 wide and 100 high: (0.5, 0.5, 0.2, 0.4) -> x 80..120, y 30..70
    result, = PostProcessor(num_classes=2, num_top_queries=2)(outputs, torch.tensor([[200, 100]]))
    assert result["labels"].tolist() == [1, 0]
    assert torch.allclose(result["scores"], torch.tensor([0.9, 0.8]))
    assert torch.allclose(result["boxes"], torch.tensor([[80.0, 30.0, 120.0, 70.0], [0.0, 50.0, 100.0, 100.0]]))


def test_deploy_returns_the_same_detections_as_a_tuple():
    outputs = {"pred_logits": torch.randn(2, 5, 3), "pred_boxes": torch.rand(2, 5, 4)}
    sizes = torch.tensor([[640, 480], [320, 240]])
    post = PostProcessor(num_classes=3, num_top_queries=4)
    listed = post(outputs, sizes)
    labels, boxes, scores = post.deploy()(outputs, sizes)
    assert not post.training
    for i, r in enumerate(listed):
        assert torch.equal(r["labels"], labels[i]) and torch.equal(r["boxes"], boxes[i])
        assert torch.equal(r["scores"], scores[i])


def test_softmax_mode_ignores_the_no_object_logit():
    # 2 real classes + "no object" last: query 0 is mostly background, query 1 is class 0
    logits = torch.log(torch.tensor([[[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]]))
    outputs = {"pred_logits": logits, "pred_boxes": torch.tensor([[[0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]]])}
    result, = PostProcessor(num_classes=2, use_focal_loss=False)(outputs, torch.tensor([[100, 100]]))
    assert result["labels"].tolist() == [0, 1]
    assert torch.allclose(result["scores"], torch.tensor([0.6, 0.2]))
    assert torch.allclose(result["boxes"][0], torch.tensor([25.0, 25.0, 75.0, 75.0]))
